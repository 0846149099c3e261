"""Measuring the approximation: how far one set of marginals is from a reference, and test nets.

Used by ``analysis/`` and the notebooks, so the numbers they print are computed here
(:mod:`pyro_dcim.quality` measures generated images):

* :func:`random_dcim` — a dense DCIM with Gaussian weights of a given scale (the
  "random nets" on which mean field is compared with exact enumeration);
* :func:`compare_marginals` — per-layer mean absolute error of unit marginals,
  ``KL(reference ‖ approx)`` of the class posterior, argmax agreement and accuracy;
* :func:`fraction_within` — how often a Monte Carlo estimate lies within ``k`` of its
  own standard errors of the reference (is the reported MCSE honest?).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .inference.marginals import Marginals
from .model import DCIM

__all__ = ["random_dcim", "class_kl", "MarginalErrors", "compare_marginals", "fraction_within"]


@torch.no_grad()
def random_dcim(widths: Sequence[int], input_dim: int, num_classes: int, weight_scale: float, units: str = "01",
                seed: int = 0, dtype: torch.dtype = torch.float64) -> DCIM:
    """A dense DCIM ``input_dim → widths… → num_classes`` with ``W^k_ij ~ N(0, s² / m_{k-1})``.

    The ``1 / fan-in`` variance makes ``s`` (``weight_scale``) the spread of a
    pre-activation whatever the layer widths, so one sweep of ``s`` compares nets of
    different shapes.  Biases are ``N(0, s² / m_{k-1})`` as well, ``b^0`` likewise with
    the fan-in of ``x^1``.
    """
    g = torch.Generator().manual_seed(seed)
    net = DCIM.from_spec([*widths, num_classes], input_shape=(input_dim,), units=units).to(dtype)
    for layer in net.layers:
        fan_in = layer.weight.shape[1]
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=dtype) * weight_scale / fan_in ** 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=dtype) * weight_scale / fan_in ** 0.5)
    net.input_bias.copy_(torch.randn(net.input_bias.shape, generator=g, dtype=dtype) * weight_scale / widths[0] ** 0.5)
    return net


def class_kl(reference: torch.Tensor, approx: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``KL(reference ‖ approx)`` per row of class probabilities ``(batch, classes)``, in nats."""
    ref = reference.clamp_min(0)
    terms = ref * (ref.clamp_min(eps).log() - approx.clamp_min(eps).log())
    return terms.sum(-1)


@dataclass
class MarginalErrors:
    """How far ``approx`` is from ``reference`` (see :func:`compare_marginals`); means over the batch.

    ``hidden_mae[k-1]``: mean ``|p̂ − p|`` over the units of ``x^k``; ``class_kl``:
    mean ``KL(reference ‖ approx)``; ``argmax_agreement``: fraction of images whose most
    probable class agrees; ``accuracy``: per estimator, the fraction whose most probable
    class is the label (when labels are given); ``image_mae``: mean ``|p̂ − p|`` over pixels.
    """

    hidden_mae: list[float]
    class_kl: Optional[float] = None
    argmax_agreement: Optional[float] = None
    image_mae: Optional[float] = None
    image_max_error: Optional[float] = None
    accuracy: dict[str, float] = field(default_factory=dict)


def compare_marginals(approx: Marginals, reference: Marginals, y: Optional[torch.Tensor] = None) -> MarginalErrors:
    """Errors of ``approx`` against ``reference`` (both :class:`Marginals` of one batch, one direction)."""
    hidden = [float((a - r).abs().mean()) for a, r in zip(approx.hidden, reference.hidden)]
    out = MarginalErrors(hidden)
    if approx.classes is not None and reference.classes is not None:
        out.class_kl = float(class_kl(reference.classes, approx.classes).mean())
        a_top, r_top = approx.classes.argmax(-1), reference.classes.argmax(-1)
        out.argmax_agreement = float((a_top == r_top).double().mean())
        if y is not None:
            out.accuracy = {approx.method or "approx": float((a_top == y).double().mean()),
                            reference.method or "reference": float((r_top == y).double().mean())}
    if approx.image is not None and reference.image is not None:
        diff = (approx.image - reference.image).abs()
        out.image_mae, out.image_max_error = float(diff.mean()), float(diff.max())
    return out


def fraction_within(estimate: Marginals, reference: Marginals, k: float = 3.0, atol: float = 1e-6) -> float:
    """Fraction of the estimated quantities (every part of :meth:`Marginals.flat`) with
    ``|estimate − reference| ≤ k · MCSE + atol``.

    ``estimate.stderr`` holds the MCSEs; a NaN MCSE (a quantity constant in every draw,
    where ArviZ has no ESS) counts as 0, so such an estimate passes only if it is right to
    ``atol``.
    """
    if estimate.stderr is None:
        raise ValueError(f"the {estimate.method or 'given'} estimate carries no standard errors")
    est, se = estimate.flat(), torch.nan_to_num(estimate.stderr.flat(), nan=0.0)
    ref = reference.flat().to(est)
    if ref.shape != est.shape:
        raise ValueError(f"estimate {tuple(est.shape)} and reference {tuple(ref.shape)} hold different quantities")
    return float(((est - ref).abs() <= k * se + atol).double().mean())
