"""Sums of softplus and log-sigmoid terms, fast and exact, for the Gibbs conditionals.

A unit's conditional needs ``Σ_j softplus(L_j)`` over its children, once per proposed flip; on a CPU
the transcendental functions are most of a sweep.  ``softplus(x) = relu(x) − log σ(|x|)`` with
``σ(|x|) ∈ [1/2, 1)``, so a sum of log-sigmoids is the log of a product that cannot underflow over a
known number of factors: one ``σ`` per term and one logarithm per product.
"""

from __future__ import annotations

import torch

__all__ = ["softplus", "log_sigmoid_abs_sum", "log_sigmoid_sum_"]

#: ``σ(|x|) ≥ 1/2``: a float32 product of this many factors stays normal (2^-100 > 1.2e-38) ...
_FLOAT32_TERMS = 100
#: ... and a float64 one of this many never underflows (2^-1000 > 1e-302).
_FLOAT64_TERMS = 1000


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x) = max(x, 0) − log σ(|x|)``: exact, and several times faster than
    ``F.softplus`` in float32 on CPU (whose ``log1p`` is not vectorised)."""
    s = torch.sigmoid(x.abs())
    # in place only when nothing is recorded for backward (the objectives differentiate the terms)
    return x.clamp_min(0) - (s.log() if x.requires_grad else s.log_())


def log_sigmoid_abs_sum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``Σ_j log σ(|x_j|)`` over ``dim``, in ``x``'s dtype."""
    return log_sigmoid_sum_(x.abs(), dim)


def log_sigmoid_sum_(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``Σ_j log σ(a_j)`` over ``dim`` for ``a ≥ 0``, in ``a``'s dtype, overwriting ``a`` with ``σ(a)``.

    Products of up to :data:`_FLOAT32_TERMS` factors are taken in ``a``'s dtype (no float64 copy
    of the full tensor) and their logarithms summed; a length with no divisor in 16..100 is
    multiplied out in float64."""
    p = a.sigmoid_().movedim(dim, -1)
    m = p.shape[-1]
    if m <= _FLOAT32_TERMS:
        return p.prod(-1).log_()
    part = next((d for d in range(_FLOAT32_TERMS, 15, -1) if m % d == 0), 0)
    if part:       # partial products, each ≥ 2^-100: their logarithms in a's dtype
        return p.unflatten(-1, (m // part, part)).prod(-1).log_().sum(-1)
    p = p.double()
    parts = p.tensor_split(max(1, -(-p.shape[-1] // _FLOAT64_TERMS)), -1)
    return sum(q.prod(-1).log() for q in parts).to(a.dtype)
