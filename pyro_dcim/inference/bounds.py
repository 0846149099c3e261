"""K-sample importance bounds on ``log p(x^0 | x^n)`` of the reverse model (eq. 17).

With ``h_s ~ q(h | x^0)`` and ``w_s = p(x^0, h_s | y) / q(h_s)``, the K-sample estimate
``L_K = log (1/K) Σ_{s≤K} w_s`` is a lower bound in expectation,
``E[L_1] ≤ E[L_10] ≤ … ≤ log p(x^0 | y)`` (Burda et al. 2016), and tends to it as ``K``
grows.  One importance run of ``R · K_max`` particles per image gives every bound:
the particles are cut into consecutive groups of ``K``, ``L_K`` is averaged over the
groups, and the spread over groups is its Monte Carlo standard error.  The groups of a
smaller ``K`` nest inside those of a larger one, so by concavity of ``log`` the averaged
bounds are non-decreasing in ``K`` for every image and draw, not only in expectation.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

import torch

from .sampling import importance_marginals
from .weights import UnreliableEstimateWarning, weight_diagnostics

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["KSampleBound", "k_sample_bounds", "importance_bounds"]


class KSampleBound(NamedTuple):
    """The K-sample bound of each image, ``(batch,)`` tensors.

    ``estimate``: ``L_K`` averaged over ``groups`` disjoint groups of ``k`` particles;
    ``stderr``: its Monte Carlo standard error (spread over groups / sqrt(groups);
    NaN with one group); ``ess``: mean effective sample size ``(Σw)² / Σw²`` of a group;
    ``khat``: the Pareto k̂ of all the image's weights and ``reliable`` (``k̂ ≤ 0.7``,
    :mod:`.weights`): with ``k̂ > 0.7`` even the largest K's bound is far from converged.
    """

    k: int
    groups: int
    estimate: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    reliable: torch.Tensor


def k_sample_bounds(log_weights: torch.Tensor, ks: Sequence[int]) -> list[KSampleBound]:
    """Bounds ``L_K`` for each ``K`` in ``ks`` from importance log-weights ``(samples, batch)``.

    Every ``K`` must divide the number of samples (the remainder would be wasted silently).
    """
    s = log_weights.shape[0]
    diag = weight_diagnostics(log_weights, what="K-sample bounds")
    out = []
    for k in ks:
        if k < 1 or s % k:
            raise ValueError(f"K = {k} must be a positive divisor of the {s} samples")
        groups = log_weights.reshape(s // k, k, -1)
        per_group = torch.logsumexp(groups, 1) - math.log(k)                   # (groups, batch)
        ess = (torch.logsumexp(groups, 1) * 2 - torch.logsumexp(2 * groups, 1)).exp().mean(0)
        stderr = per_group.std(0) / math.sqrt(s // k) if s // k > 1 else torch.full_like(per_group[0], math.nan)
        out.append(KSampleBound(k, s // k, per_group.mean(0), stderr, ess, diag.khat, diag.reliable))
    return out


def importance_bounds(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, ks: Sequence[int] = (1, 10, 100, 1000),
                      groups: int = 2, *, proposal: str = "mean_field",
                      chunk_size: Optional[int] = None) -> list[KSampleBound]:
    """K-sample bounds on ``log p(x^0 | y)`` from ``groups · max(ks)`` particles per image.

    ``proposal``: ``"mean_field"`` (the forward mean-field guide ``q(x^1..x^{n-1} | x^0)``,
    eq. 14) or ``"forward"`` (ancestral samples of the forward chain, eq. 13).
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    with warnings.catch_warnings():   # k_sample_bounds warns once, for the same weights
        warnings.simplefilter("ignore", UnreliableEstimateWarning)
        # only the weights are used: the posterior-side ESS check would be wasted work here
        m = importance_marginals(net, x0, groups * max(ks), y, direction="reverse", proposal=proposal,
                                 chunk_size=chunk_size, posterior_check=0)
    return k_sample_bounds(m.log_weights, ks)
