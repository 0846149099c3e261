"""Importance weights you can trust or are told not to: Pareto-smoothed importance sampling (PSIS).

The sample ESS ``(Σw)² / Σw²`` of heavy-tailed weights is itself a wild, optimistic estimate.
PSIS (Vehtari, Simpson, Gelman, Yao & Gabry 2024) fits a generalised Pareto distribution to the
largest weights of each image; its shape ``k̂`` says whether the estimate can be trusted
(``k̂ ≤ 0.7``; above it the error bar is meaningless), and the smoothed weights replace the
largest raw ones in the ESS and the Monte Carlo standard error.  ArviZ computes both
(:func:`pyro_dcim.inference.diagnostics.psis`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import pyro
import torch

from . import diagnostics

__all__ = ["KHAT_THRESHOLD", "WeightDiagnostics", "weight_diagnostics", "log_mean_exp", "tail_length",
           "UnreliableEstimateWarning"]

#: Images whose Pareto ``k̂`` exceeds this are flagged unreliable (Vehtari et al. 2024).
KHAT_THRESHOLD = 0.7
#: Fewer samples leave at most four in ArviZ's tail: no Pareto fit, ``k̂`` is NaN.
MIN_SAMPLES_FOR_KHAT = 21


class UnreliableEstimateWarning(UserWarning):
    """Some images' importance weights are too heavy-tailed for their estimate to be trusted."""


class WeightDiagnostics(NamedTuple):
    """Per image, ``(batch,)``: Pareto ``khat``, ``reliable`` (``k̂ ≤ 0.7``, or k̂ NaN), the ESS
    ``1 / Σ w̃²`` and the standard error of ``log mean w`` from the smoothed, normalised weights
    ``w̃``; ``smoothed``: the normalised smoothed log-weights ``(samples, batch)``."""

    khat: torch.Tensor
    reliable: torch.Tensor
    ess: torch.Tensor
    stderr: torch.Tensor
    smoothed: torch.Tensor


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """``log mean_s exp(log_w[s])`` over the first dimension."""
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


def tail_length(num_samples: int, reff: float = 1.0) -> int:
    """The number of largest weights ArviZ's PSIS smooths: ``ceil(min(S/5, 3 sqrt(S/reff)))``."""
    return int(math.ceil(min(num_samples / 5.0, 3 * math.sqrt(num_samples / reff))))


def delta_method_stderr(ess: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The delta method's standard error of ``log mean w`` at a given ESS: ``sqrt((S/ESS − 1) / (S − 1))``."""
    return ((num_samples / ess - 1).clamp_min(0) / max(num_samples - 1, 1)).sqrt()


def weight_diagnostics(log_w: torch.Tensor, *, what: str = "importance sampling", warn: bool = True
                       ) -> WeightDiagnostics:
    """PSIS diagnostics of per-image log-weights ``(samples, batch)`` (independent draws, ``reff = 1``).

    The standard error of ``log mean w`` is the delta method's ``sqrt((S Σw̃² − 1) / (S − 1))``
    with the smoothed normalised weights.  With ``warn``, one :class:`UnreliableEstimateWarning`
    names how many images are flagged and what to do.
    """
    s = log_w.shape[0]
    if s >= MIN_SAMPLES_FOR_KHAT:
        smoothed, khat = diagnostics.psis(log_w)
    else:
        smoothed = log_w - log_w.logsumexp(0)
        khat = torch.full(log_w.shape[1:], math.nan, dtype=torch.float64)
    smoothed, khat = smoothed.to(log_w.device), khat.to(log_w.device)
    # ArviZ's fit can fail on a tail of tied weights (tiny hidden spaces repeat states): keep the raw ones
    failed = ~torch.isfinite(smoothed).all(0)
    if failed.any():
        raw = (log_w - log_w.logsumexp(0)).to(smoothed)
        smoothed = torch.where(failed, raw, smoothed)
    sum_sq = (2 * smoothed.double()).exp().sum(0)
    ess = 1.0 / sum_sq
    stderr = delta_method_stderr(ess, s)
    reliable = ~(khat > KHAT_THRESHOLD)
    if warn:
        warn_unreliable(reliable, what)
    return WeightDiagnostics(khat, reliable, ess.to(log_w.dtype), stderr.to(log_w.dtype), smoothed)


def warn_unreliable(reliable: torch.Tensor, what: str, *, posterior_check: bool = False) -> None:
    bad = int((~reliable).sum())
    if bad:
        why = (f"Pareto k̂ > {KHAT_THRESHOLD}, or a sample ESS over twice the reported one (the probe or "
               "posterior_check saw mass the samples missed)" if posterior_check else f"Pareto k̂ > {KHAT_THRESHOLD}")
        warnings.warn(
            f"{what}: {bad} of {reliable.numel()} images have {why}; their estimates and "
            "error bars cannot be trusted (see .reliable). Use more samples, proposal='forward', "
            "ais_log_likelihood or gibbs_posterior for them.", UnreliableEstimateWarning,
            stacklevel=_caller_stacklevel())


#: Frames in these folders are the library's own (and torch's no-grad decorators, Pyro's handlers)
_INTERNAL = tuple(str(folder) + os.sep for folder in (Path(__file__).resolve().parents[1],   # pyro_dcim/
                                                      Path(torch.__file__).resolve().parent,
                                                      Path(pyro.__file__).resolve().parent)) \
    + (str(Path(contextlib.__file__).resolve()),)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the user's line: the first frame outside pyro_dcim,
    torch, Pyro and contextlib, however many decorators and helpers lie between (a fixed number
    pointed at ``torch/utils/_contextlib.py``).  Counted from :func:`warnings.warn`'s caller."""
    frame, level = sys._getframe(1), 1    # the caller of this function calls warnings.warn: level 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level
