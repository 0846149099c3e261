"""Initialisation of a DCIM's parameters (their values only; the model is unchanged).

Deep {0,1} sigmoid networks start on a plateau: with PyTorch's default
initialisation the paper's 8-layer CNN stays at chance (loss log 10) for epochs,
because the non-centred sigmoid outputs push every layer's pre-activations to one
side and the top layers saturate (Glorot & Bengio, 2010).  :func:`data_dependent_init`
scales each ``W^k`` so that its pre-activations have a set spread on a batch of
data and chooses ``b^k`` to centre them, starting every unit in its sensitive range;
with it the CNN leaves chance in its first epoch.  ``b^0`` can start at the logit of
the mean image, the best factorised image model without classes.
"""

from __future__ import annotations

import torch

from .model import DCIM

__all__ = ["INIT_SCHEMES", "initialise", "init_input_bias", "data_dependent_init", "glorot_init"]

#: ``data``: :func:`data_dependent_init`; ``torch``: PyTorch's default (kept); ``glorot`` and
#: ``glorot-sigmoid``: :func:`glorot_init` with gain 1 and 4.
INIT_SCHEMES = ("data", "torch", "glorot", "glorot-sigmoid")


@torch.no_grad()
def init_input_bias(net: DCIM, x0: torch.Tensor, eps: float = 1e-3) -> None:
    """``b^0 ← logit(mean image)`` (as a Bernoulli logit in the model's unit encoding)."""
    mean = x0.reshape(-1, *net.input_shape).mean(0).clamp(eps, 1 - eps).to(net.input_bias)
    logit = torch.log(mean) - torch.log1p(-mean)
    net.input_bias.copy_(logit / 2 if net.units.name == "pm1" else logit)  # pm1: p = σ(2 b)


@torch.no_grad()
def data_dependent_init(net: DCIM, x0: torch.Tensor, preactivation_std: float | None = None) -> None:
    """Rescale ``W^1 .. W^{n-1}`` and set ``b^1 .. b^{n-1}`` on the batch ``x0``.

    Layer by layer, along the forward mean field: ``W^k`` is scaled so that
    ``W^k μ^{k-1}`` has standard deviation ``preactivation_std`` around each unit's
    mean (default 2 for {0,1} units, whose sigmoid has slope 1/4; 1 for ±1 units),
    and ``b^k`` is minus that mean per unit (per channel for convolutions).  The
    class layer and ``b^0`` keep their values.
    """
    target = preactivation_std if preactivation_std is not None else (2.0 if net.units.name == "01" else 1.0)
    h = net.units.state(x0.reshape(-1, *net.input_shape).to(net.input_bias))
    for layer in net.layers[:-1]:
        a = layer(h) - layer.bias
        reduce = [0] + list(range(2, a.dim()))  # batch, and space for convolutions
        std = (a - a.mean(reduce, keepdim=True)).std()
        if std > 0:
            layer.weight.mul_(target / std)
            a = a * (target / std)
        layer.bias.copy_(-a.mean(reduce, keepdim=True)[0])   # (units,) or, per kernel, (K, 1, 1)
        h = net.units.mean(layer(h))


@torch.no_grad()
def glorot_init(net: DCIM, gain: float = 1.0) -> None:
    """Every ``W^k`` Glorot-uniform (variance ``2 gain² / (fan_in + fan_out)``), biases 0; gain 4 is
    Glorot & Bengio's advice for sigmoid units."""
    for layer in net.layers:
        torch.nn.init.xavier_uniform_(layer.weight, gain=gain)
        torch.nn.init.zeros_(layer.bias)


def initialise(net: DCIM, scheme: str, x0: torch.Tensor) -> None:
    """Apply one of :data:`INIT_SCHEMES` (``x0``: a batch of training images, used by ``data``)."""
    if scheme == "data":
        data_dependent_init(net, x0)
    elif scheme in ("glorot", "glorot-sigmoid"):
        glorot_init(net, 1.0 if scheme == "glorot" else 4.0)
    elif scheme != "torch":
        raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
