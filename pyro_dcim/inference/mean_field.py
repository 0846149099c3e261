"""The approximation itself, eq. (2): the DNN's forward (and tied reverse) pass as marginals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..validation import check_direction
from .marginals import Marginals

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["mean_field_marginals"]


def _method(approximation: str) -> str:
    return "mean_field" if approximation == "first-order" else approximation


@torch.no_grad()
def mean_field_marginals(net: "DCIM", x0: Optional[torch.Tensor] = None, *, y: Optional[torch.Tensor] = None,
                         direction: str = "forward", approximation: str = "first-order") -> Marginals:
    """Mean-field marginals from the core passes (no second implementation).

    Forward, eq. (14)-(15): ``p(x^k_i = 1 | x^0) ≈ bit_prob(μ^k_i)`` and
    ``p(x^n | x^0) ≈ softmax(W^n μ^{n-1} + b^n)``.  Reverse (``y`` given):
    ``p(x^k_i = 1 | x^n) ≈ bit_prob(ν^k_i)`` down to the image.  ``approximation``:
    ``"first-order"`` (eq. 2), ``"ap2"`` or ``"variational"`` (:mod:`pyro_dcim.approximations`).
    """
    units = net.units
    if check_direction(direction) == "forward":
        mf = net.forward_mean_field(x0, approximation=approximation)
        return Marginals([units.bit_probs(m) for m in mf.hidden], classes=mf.logits.softmax(-1),
                         method=_method(approximation), direction=direction)
    if y is None:
        raise ValueError("reverse mean-field marginals need the class y")
    rev = net.reverse_mean_field(y, approximation=approximation)
    return Marginals([units.bit_probs(m) for m in rev.hidden[::-1]], image=torch.sigmoid(rev.logits),
                     method=_method(approximation), direction=direction)
