"""Data-dependent initialisation of a DCIM's parameters (their values only; the model is unchanged).

Deep {0,1} sigmoid networks start on a plateau: with PyTorch's default
initialisation the paper's 8-layer CNN stays at chance (loss log 10) for epochs,
because the non-centred sigmoid outputs push every layer's pre-activations to one
side and the top layers saturate (Glorot & Bengio, 2010).  Scaling each ``W^k``
so that its pre-activations have a set spread on a batch of data, and choosing
``b^k`` to centre them, starts every unit in its sensitive range.  ``b^0`` starts
at the logit of the mean image, the best factorised image model without classes.
"""

from __future__ import annotations

import torch

from .model import DCIM

__all__ = ["init_input_bias", "data_dependent_init"]


@torch.no_grad()
def init_input_bias(net: DCIM, x0: torch.Tensor, eps: float = 1e-3) -> None:
    """``b^0 ← logit(mean image)`` (as a Bernoulli logit in the model's unit encoding)."""
    mean = x0.mean(0).clamp(eps, 1 - eps).to(net.input_bias)
    logit = torch.log(mean) - torch.log1p(-mean)
    net.input_bias.copy_(logit / 2 if net.units.name == "pm1" else logit)  # pm1: p = σ(2 b)


@torch.no_grad()
def data_dependent_init(net: DCIM, x0: torch.Tensor, preactivation_std: float | None = None) -> None:
    """Rescale ``W^1 .. W^{n-1}`` and set ``b^1 .. b^{n-1}`` on the batch ``x0``.

    Layer by layer, along the forward mean field: ``W^k`` is scaled so that
    ``W^k μ^{k-1}`` has standard deviation ``preactivation_std`` (default 2 for
    {0,1} units, whose sigmoid has slope 1/4; 1 for ±1 units), and ``b^k`` is
    minus its mean per unit (per channel for convolutions).  The class layer keeps
    its initialisation; ``b^0`` is set by :func:`init_input_bias`.
    """
    target = preactivation_std if preactivation_std is not None else (2.0 if net.units.name == "01" else 1.0)
    h = net.units.state(x0.to(net.input_bias))
    for layer in net.layers[:-1]:
        a = layer(h) - layer.bias
        reduce = [0] + list(range(2, a.dim()))  # batch, and space for convolutions
        std = (a - a.mean(reduce, keepdim=True)).std()  # spread around each unit's own mean
        if std > 0:
            layer.weight.mul_(target / std)
            a = a * (target / std)
        layer.bias.copy_(-a.mean(reduce).reshape(layer.bias.shape))
        h = net.units.mean(layer(h))
    init_input_bias(net, x0)
