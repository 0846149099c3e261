"""A cheap look, from outside the proposal, for posterior mass that importance sampling never drew.

Importance sampling with ``S`` draws from ``q`` has the large-sample ESS ``S / ρ`` with

    ρ = E_q[w²] / Z² = Σ_h p(x, h)² / (q(h) Z²).

The sample ESS (and its Pareto-smoothed version) estimates ``ρ`` from draws of ``q``: a region of the
posterior where ``q`` is tiny is not drawn, the weights look light, ``k̂`` is small and the ESS can be
many times too large.  No statistic of ``q``'s own draws can see that region, so the probe draws
elsewhere: ``M`` states from ``r``, the target's own prior chain (``p(h | x⁰)`` for the forward
posterior, ``p(h | y)`` for the reverse one) with its logits times ``τ = 1/4``, an over-dispersed
version of the defensive mixture's second half, and estimates the part of ``ρ`` in the region the
probe covers better than the sample,

    ρ_B = (1/M) Σ_j 1[M r(h_j) > S q(h_j)] p(x, h_j)² / (q(h_j) r(h_j) Ẑ²),

an unbiased estimate (given ``Z``) of ``Σ_{h ∈ B} p² / (q Z²)``.  ``S / (ρ_sample + ρ_B)`` is the ESS
reported, and an image whose ``ρ_B`` exceeds ``ρ_sample`` (sample ESS over twice the reported one) is
flagged.  The count may take a little of ``B`` twice, so the reported ESS errs low.

It costs ``M = S/4`` draws, each one pass of the chain (which scores it under both temperatures), the
far end and the guide: about a quarter of the sampling.  The temperature and ``M`` were chosen on random
nets small enough to enumerate (``analysis/importance_coverage.py``, tuning seeds; both chains at
``τ = 1/2`` did no better per draw and cost two passes).  What it can see is limited by ``r``: a mode
that the tempered chain does not reach in ``M`` draws stays invisible, and in wide layers a broad ``r``
rarely reaches any one mode; the Gibbs check (:mod:`.posterior_check`) is the stronger, dearer option.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..chain import Chain
from .defensive import Mixture, bernoulli_sum_log_prob

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["probe_rho", "PROBE_TEMPERATURE", "PROBE_FRACTION"]

#: The probe's chain has its logits multiplied by this (1 = the target's prior chain itself).
PROBE_TEMPERATURE = 0.25
#: Probe draws per importance sample, by default (``M = S / 4``).
PROBE_FRACTION = 1 / 4


@torch.no_grad()
def probe_rho(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, direction: str, mix: Mixture,
              log_evidence: torch.Tensor, num_samples: int, num_probes: int, chunk_size: int,
              tau: float = PROBE_TEMPERATURE) -> torch.Tensor:
    """``ρ_B`` per image ``(batch,)``: the part of ``E_q[w²]/Z²`` the sampler's ``num_samples`` draws of the
    defensive mixture ``mix`` can hardly see, estimated from ``num_probes`` draws of the tempered chain
    (``chunk_size`` at a time, as the sampler draws).

    ``log_evidence``: the sampler's ``log Ẑ`` per image; ``y``: class labels."""
    total = 0.0
    for start in range(0, num_probes, chunk_size):
        count = min(chunk_size, num_probes - start)
        log_p, log_q, log_r = _probe_chunk(net, x0, y, direction, mix, count, tau)
        # only where the probe is the denser of the two: elsewhere the sample's own ESS counts it
        covered = math.log(num_probes) + log_r > math.log(num_samples) + log_q
        term = (2 * log_p - log_q - log_r - 2 * log_evidence).double().exp()
        total = total + torch.where(covered, term, torch.zeros_like(term)).sum(0)
    return total / num_probes


def _probe_chunk(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, direction: str, mix: Mixture, count: int,
                 tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` draws of the tempered chain: ``log p(x, h)``, ``log q(h)`` and ``log r(h)``, ``(count, batch)``."""
    chain = Chain(net, direction)
    parent = chain.start_state(x0, y)
    log_prior = log_r = 0.0
    bits = {}
    for k in chain.order:
        # one pass of the chain draws the tempered state and scores it under both temperatures
        logits = chain.logits(k, parent)
        p = torch.sigmoid(tau * logits)
        p = p.expand(count, *p.shape[-1 - len(net.shapes[k]):])
        bits[k] = torch.rand(p.shape, dtype=p.dtype, device=p.device).lt_(p).to(p.dtype)
        events = len(net.shapes[k])
        log_prior = log_prior + bernoulli_sum_log_prob(bits[k], logits, events)
        log_r = log_r + bernoulli_sum_log_prob(bits[k], tau * logits, events)
        parent = chain.units.state(bits[k])
    last = chain.order[-1]
    pre = chain.child_preactivation(last, parent)
    if chain.forward:
        log_end = chain.child_log_prob(last, pre, y)
    else:
        log_end = bernoulli_sum_log_prob(x0, chain.units.bit_logits(pre), len(net.input_shape))
    log_guide = sum(bernoulli_sum_log_prob(bits[k], lg, len(lg.shape) - 1)
                    for k, lg in zip(range(1, net.num_layers), mix.guide_logits))
    log_q = torch.logaddexp(math.log(mix.alpha) + log_guide, math.log(1 - mix.alpha) + log_prior)
    return log_prior + log_end, log_q, log_r
