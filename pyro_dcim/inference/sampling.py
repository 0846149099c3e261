"""Monte Carlo marginals from the Pyro models: ancestral and importance sampling.

Both run the Pyro model (and the proposal) once per chunk of particles under a
particle ``pyro.plate`` at ``dim=-2``, left of the data plate, so every site is
``(particles, batch, …)`` and each image gets its own log-weights ``(S, B)``.
(``pyro.infer.Importance`` loops over samples and sums log-weights over the batch
plate, so all images would share one weight; it is not used.)

* ancestral sampling of the forward chain (eq. 13) or the reverse chain (eq. 17),
  Rao-Blackwellised: the estimate of a layer's marginal is the mean of its
  conditional ``p(x^k = 1 | parent_s)`` over the samples, the class estimate
  ``mean_s p(x^n | x^{n-1}_s)``;
* self-normalised importance sampling with a proposal (given the image, by default the
  defensive mixture of the mean-field guide ``q(x^k) = Π_i Bernoulli(μ^k_i)``, eq. 14, and
  the target's own prior chain, :mod:`.defensive`), for the same marginals or, with
  the far end observed, for the posterior ``p(x^1..x^{n-1} | x^0, x^n)`` and the
  evidence ``log p(x^n | x^0)`` (forward) or ``log p(x^0 | x^n)`` (reverse).

Standard errors: ``Var ≈ Σ_s w̃_s² (f_s − f̂)²`` (delta method; the plain sample
variance over ``S`` when the weights are equal), ``ESS = 1 / Σ_s w̃_s²``, with ``w̃`` the
Pareto-smoothed normalised weights (PSIS, :mod:`.weights`): each image's Pareto ``k̂`` is
reported, and images with ``k̂ > 0.7`` are flagged (``.reliable``) with one warning.  The
estimates use the smoothed weights too, except the evidence, which stays the raw (unbiased)
``log mean_s w_s``.  Only the largest weights are smoothed, so a stream of chunks keeps the
readouts of the current largest-weight particles and corrects the streamed sums at the end.
For posteriors the ESS is also looked at from outside the samples: by the probe (:mod:`.probe`,
default) and, when asked, the Gibbs check (:mod:`.posterior_check`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

import pyro
import torch
from pyro import poutine

from ..pyro_models import hidden_site
from ..validation import check_direction
from .defensive import DEFENSIVE_WEIGHT, PARTICLE_PLATE, Mixture, log_weights_at, mixture_chunk
from .marginals import Marginals
from .posterior_check import DISAGREEMENT, PosteriorCheck, posterior_ess_check
from .probe import PROBE_FRACTION, probe_rho
from .streamed import WeightedMoments
from .weights import delta_method_stderr, warn_unreliable, weight_diagnostics

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["ancestral_marginals", "importance_marginals", "importance_log_likelihood", "LogLikelihood",
           "PROPOSALS", "default_chunk_size", "CHUNK_ELEMENTS"]

#: Proposals for importance sampling, by name (see :func:`importance_marginals`).
PROPOSALS = ("defensive", "mean_field", "reverse_mean_field", "forward", "reverse")
_log_weights_at = log_weights_at   # the name exact.py imports


class LogLikelihood(NamedTuple):
    """A per-image Monte Carlo estimate of a log-probability, ``(batch,)`` each: the estimate, its
    standard error and ESS (Pareto-smoothed weights), the Pareto ``khat`` and ``reliable`` (``k̂ ≤ 0.7``)."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    reliable: torch.Tensor


def _proposal(net: "DCIM", name: str, x0: Optional[torch.Tensor], y: Optional[torch.Tensor],
              direction: str = "forward") -> Callable[[], None] | Mixture:
    """A Pyro callable sampling the hidden sites: the (reverse) mean-field guide or a prior chain,
    or (``"defensive"``) the mixture of the mean-field guide and the target's own prior chain."""
    needs = {"mean_field": ("x0", x0), "forward": ("x0", x0), "reverse_mean_field": ("y", y), "reverse": ("y", y),
             "defensive": ("x0", x0)}
    if name not in needs:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {name!r}")
    arg, value = needs[name]
    if value is None:
        raise ValueError(f"proposal {name!r} needs {arg}")
    if name == "defensive":
        if direction == "reverse" and y is None:
            raise ValueError("proposal 'defensive' of the reverse chain needs y")
        prior = "forward" if direction == "forward" else "reverse"
        with torch.no_grad():
            guide = net.forward_mean_field(x0, upto=net.num_layers - 1).preactivations
        return Mixture(_proposal(net, "mean_field", x0, y), _proposal(net, prior, x0, y), DEFENSIVE_WEIGHT,
                        [net.units.bit_logits(a) for a in guide])
    return {
        # the hidden layers only: the model draws its own far end, which the readouts Rao-Blackwellise
        "mean_field": poutine.block(lambda: net.mean_field_guide(x0, y), hide=["class"]),
        "reverse_mean_field": poutine.block(lambda: net.reverse_mean_field_guide(y, x0), hide=["x0"]),
        "forward": poutine.block(lambda: net.forward_model(x0), hide=["class"]),
        "reverse": poutine.block(lambda: net.reverse_model(y), hide=["x0"]),
    }[name]


def _target(net: "DCIM", direction: str, x0: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> Callable:
    if direction == "forward":
        return lambda: net.forward_model(x0, y)
    return lambda: net.reverse_model(y, x0)


def _readouts(net: "DCIM", trace, direction: str, observed_end: bool) -> dict[str, torch.Tensor]:
    """Per-particle quantities whose weighted means are the marginals.

    Without an observed far end each layer's own conditional is used
    (Rao-Blackwellised); with it, the sampled bits (the posterior couples layers).
    """
    out = {}
    for k in range(1, net.num_layers):
        site = trace.nodes[hidden_site(k)]
        # a site's fn is not expanded to the particle plate when its parent is the observed x0
        out[f"x{k}"] = site["value"] if observed_end else site["fn"].base_dist.probs.expand(site["value"].shape)
    if not observed_end and direction == "forward":
        site = trace.nodes["class"]
        out["classes"] = site["fn"].probs.expand(*site["value"].shape, net.num_classes)
    elif not observed_end:
        site = trace.nodes["x0"]
        out["image"] = site["fn"].base_dist.probs.expand(site["value"].shape)
    return out


def _cancelling_sites(net: "DCIM", proposal: str, direction: str) -> frozenset[str]:
    """Hidden sites whose proposal is the target's own conditional, so ``log p − log q = 0``:
    the first layer of the mean-field guide (``μ^1`` is exact, eq. 14), the top layer of the
    reverse one, and every hidden layer of a prior chain proposing for itself.  Not scoring
    them saves two log-probabilities of the widest layers per particle."""
    hidden = [hidden_site(k) for k in range(1, net.num_layers)]
    same = {("mean_field", "forward"): hidden[:1], ("reverse_mean_field", "reverse"): hidden[-1:],
            ("forward", "forward"): hidden, ("reverse", "reverse"): hidden}
    return frozenset(same.get((proposal, direction), ()))


def _log_weights(model_tr, guide_tr, skip: frozenset[str] = frozenset()) -> torch.Tensor:
    """``log p(x, obs) − log q(x)`` per particle and image, ``(S, B)``, leaving out ``skip``."""
    log_w = 0.0
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or name == PARTICLE_PLATE or name in skip or site["infer"].get("_do_not_score"):
            continue
        if site["is_observed"]:
            log_w = log_w + site["log_prob"]
        elif name in guide_tr.nodes:
            log_w = log_w + site["log_prob"] - guide_tr.nodes[name]["log_prob"]
    return log_w


#: Elements in the largest tensor of one chunk of particles, by device type.  On CPU, a
#: tensor under glibc's mmap threshold (32 MB) is reused from the heap; a larger one is
#: mapped and page-faulted afresh for every chunk, which doubled the cost of sampling.
CHUNK_ELEMENTS = {"cpu": 2 ** 21, "cuda": 2 ** 26}


def default_chunk_size(net: "DCIM", batch: int, device: Optional[torch.device] = None) -> int:
    """Particles drawn at once for ``batch`` images: as many as keep the widest layer's
    ``(particles, batch, *shape)`` tensor within :data:`CHUNK_ELEMENTS` (at least one)."""
    device = device if device is not None else net.input_bias.device
    widest = max(math.prod(shape) for shape in net.shapes)
    return max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cuda"]) // (max(batch, 1) * widest))


def _chunks(num_samples: int, chunk_size: int) -> list[int]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of particles, got {chunk_size}")
    count = -(-num_samples // chunk_size)
    size = -(-num_samples // count)          # equal chunks, none above chunk_size
    return [min(size, num_samples - i) for i in range(0, num_samples, size)]


def _batch(net: "DCIM", x0: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> int:
    if x0 is not None:
        return x0.numel() // max(math.prod(net.input_shape), 1)
    return y.shape[0] if y is not None and y.dim() > (1 if y.is_floating_point() else 0) else 1


def _second_opinions(diag, ess: torch.Tensor, stderrs: dict[str, torch.Tensor], log_mean_w: torch.Tensor,
                     num_samples: int, probe: Optional[Callable[[torch.Tensor], torch.Tensor]],
                     check: Optional[Callable[[torch.Tensor, torch.Tensor], PosteriorCheck]]) -> tuple:
    """The ESS seen from outside the samples: the probe adds the part of ``ρ = S / ESS`` that the samples
    could hardly see (:mod:`.probe`), the Gibbs check estimates ``ρ`` where the posterior lies
    (:mod:`.posterior_check`, only on the images ``k̂`` leaves unflagged; NaN on the others).  The smallest
    ESS is reported, the error bars widen to it, and images whose sample ESS is more than twice the
    reported one are flagged with those of ``k̂ > 0.7``.  Returns the ESS, standard errors, the evidence's
    standard error, ``reliable`` and the ``extra`` diagnostics."""
    sample_ess = ess.double()
    reported, extra = sample_ess, {"sample_ess": ess}
    if probe is not None:
        reported = num_samples / (num_samples / sample_ess + probe(log_mean_w).double())
        extra["probe_ess"] = reported.to(ess)
    if check is not None:
        post_ess = torch.full_like(sample_ess, math.nan)
        if diag.reliable.any():
            post_ess[diag.reliable] = check(log_mean_w[diag.reliable], diag.reliable).ess.double()
        reported = torch.where(post_ess.isnan(), reported, torch.minimum(reported, post_ess))
        extra["posterior_ess"] = post_ess.to(ess)
    widen = (sample_ess / reported).sqrt()
    stderrs = {k: v * widen.reshape(-1, *([1] * (v.dim() - 1))).to(v) for k, v in stderrs.items()}
    evidence_se = torch.maximum(diag.stderr.double(), delta_method_stderr(reported, num_samples)).to(diag.stderr)
    reliable = diag.reliable & ~(sample_ess > DISAGREEMENT * reported)
    return reported.to(ess), stderrs, evidence_se, reliable, extra


@torch.no_grad()
def _particle_marginals(net: "DCIM", direction: str, model: Callable, proposal: Optional[Callable],
                        num_samples: int, chunk_size: int, observed_end: bool, method: str,
                        skip: frozenset[str] = frozenset(), warn: bool = True,
                        check: Optional[Callable[[torch.Tensor, torch.Tensor], PosteriorCheck]] = None,
                        probe: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Marginals:
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    weighted = proposal is not None
    acc = WeightedMoments(num_samples if weighted else None)
    all_log_w = []
    scored = lambda name, site: name not in skip  # noqa: E731
    for size in _chunks(num_samples, chunk_size):
        if isinstance(proposal, Mixture):
            # each component's particles are a chunk of their own (a per-image readout stays broadcast)
            parts = mixture_chunk(net, proposal, model, size)
        else:
            with pyro.plate(PARTICLE_PLATE, size, dim=-2):
                if proposal is None:
                    model_tr = poutine.trace(model).get_trace()
                else:
                    guide_tr = poutine.trace(proposal).get_trace()
                    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace()
            log_w = None
            if proposal is not None:
                model_tr.compute_log_prob(scored)
                guide_tr.compute_log_prob(scored)
                log_w = _log_weights(model_tr, guide_tr, skip)
            parts = [(model_tr, log_w)]
        for model_tr, log_w in parts:
            values = _readouts(net, model_tr, direction, observed_end)
            first = next(iter(values.values()))
            # every term may cancel: a prior chain proposing for itself
            log_w = first.new_zeros(first.shape[:2]) + (0 if log_w is None else log_w)
            acc.update(log_w, values, equal_weights=proposal is None, binary=observed_end)
            all_log_w.append(log_w)
    log_w = torch.cat(all_log_w)
    what = f"importance sampling ({direction})"
    diag = weight_diagnostics(log_w, what=what, warn=warn and check is None and probe is None) if weighted else None
    means, stderrs, ess, log_mean_w = acc.result(None if diag is None else diag.smoothed)
    extra, reliable, evidence_se = {}, None if diag is None else diag.reliable, None if diag is None else diag.stderr
    if (check is not None or probe is not None) and diag is not None:
        ess, stderrs, evidence_se, reliable, extra = _second_opinions(
            diag, ess, stderrs, log_mean_w, num_samples, probe, check)
        if warn:
            warn_unreliable(reliable, what, posterior_check=True)

    def pack(d: dict[str, torch.Tensor], **kw) -> Marginals:
        return Marginals([d[f"x{k}"] for k in range(1, net.num_layers)], d.get("classes"), d.get("image"),
                         method=method, direction=direction, **kw)

    psis = {} if diag is None else {"khat": diag.khat, "reliable": reliable}
    return pack(means, stderr=pack(stderrs), ess=ess, log_weights=log_w,
                log_evidence=log_mean_w if observed_end else None,
                log_evidence_stderr=evidence_se if observed_end else None, extra=extra, **psis)


def ancestral_marginals(net: "DCIM", x0: Optional[torch.Tensor], num_samples: int, *,
                        y: Optional[torch.Tensor] = None, direction: str = "forward",
                        chunk_size: Optional[int] = None) -> Marginals:
    """Exact (ancestral) sampling of the forward chain ``p(x^1..x^n | x^0)`` (eq. 13), or of the
    reverse chain ``p(x^{n-1}..x^0 | x^n = y)`` with ``direction="reverse"`` (eq. 17).

    Rao-Blackwellised: ``classes = mean_s p(x^n | x^{n-1}_s)`` is unbiased for
    ``p(x^n | x^0)``.  ``ess`` equals ``num_samples``.  ``chunk_size`` bounds how many
    particles are held at once (they are still vectorised within a chunk); by default
    :func:`default_chunk_size`.
    """
    x0, y = (x0, None) if check_direction(direction) == "forward" else (None, y)
    chunk_size = default_chunk_size(net, _batch(net, x0, y)) if chunk_size is None else chunk_size
    return _particle_marginals(net, direction, _target(net, direction, x0, y), None, num_samples, chunk_size,
                               False, "ancestral")


def importance_marginals(net: "DCIM", x0: Optional[torch.Tensor], num_samples: int,
                         y: Optional[torch.Tensor] = None, *, direction: str = "forward",
                         proposal: Optional[str] = None, chunk_size: Optional[int] = None,
                         probe: Optional[int] = None, posterior_check: int = 0) -> Marginals:
    """Self-normalised importance sampling of the DCIM's marginals or posterior.

    Forward: ``x0`` given; with ``y`` the target is the posterior
    ``p(x^1..x^{n-1} | x^0, x^n = y)`` and ``log_evidence`` estimates ``log p(y | x^0)``;
    without, the target is ``p(x^1..x^n | x^0)`` (hidden and class marginals).
    Reverse: ``y`` given; with ``x0`` the posterior of the reverse chain and
    ``log p(x^0 | y)``; without, ``p(x^k | y)`` down to the image.

    ``proposal``: ``"defensive"`` (the default when ``x0`` is given: an equal mixture of the
    forward mean-field guide and the target's own prior chain, so the weights of a posterior
    are bounded by 2 and a guide that misses the posterior cannot make the error bar lie;
    it costs about three proposals' work), ``"mean_field"`` (the forward mean-field guide,
    eq. 14), ``"reverse_mean_field"`` (the default otherwise), ``"forward"`` or ``"reverse"``
    (the prior chains).  Log-weights are per image,
    ``(num_samples, batch)``, in ``.log_weights``; ``.ess`` is ``1 / Σ_s w̄_s²``.
    Sites where the proposal equals the target's conditional (the first layer under the
    mean-field guide, eq. 14) cancel and are not scored.  ``chunk_size``: particles drawn
    at once, by default :func:`default_chunk_size`.

    For a posterior (image and class labels given) under the defensive proposal, ``probe`` more draws
    look for mass the samples never reached (:mod:`.probe`; by default ``num_samples / 4``, 0 turns it
    off): a proposal that never reaches part of the posterior has weights that look light and a sample
    ESS far too large.  ``.ess`` then adds what the probe saw (the error bars widen to it), images whose
    sample ESS is more than twice the reported one are flagged with those of ``k̂ > 0.7``, and
    ``.extra`` keeps ``sample_ess`` and ``probe_ess``.  It costs about a quarter of the sampling.

    ``posterior_check``: Gibbs sweeps per chain (4 chains per image, after half as many warming up) that
    score the weights where the *posterior* lies (:mod:`.posterior_check`); 0 (the default) leaves it out.
    Stronger than the probe where the chains mix, and far dearer: ``1.5 · posterior_check`` sweeps of 4
    chains per image (at 100, 50-500× the sampling on the 784-512-512-10 net), on the images ``k̂``
    leaves unflagged (``.extra["posterior_ess"]``, NaN on the others); the smallest ESS is reported.
    """
    check_direction(direction)
    if posterior_check < 0:
        raise ValueError(f"posterior_check must be a number of Gibbs sweeps (0 turns it off), got {posterior_check}")
    proposal = proposal or ("defensive" if x0 is not None else "reverse_mean_field")
    observed_end = (y if direction == "forward" else x0) is not None
    chunk_size = default_chunk_size(net, _batch(net, x0, y)) if chunk_size is None else chunk_size
    model, q = _target(net, direction, x0, y), _proposal(net, proposal, x0, y, direction)
    if probe is not None and probe < 0:
        raise ValueError(f"probe must be a number of draws (0 turns it off), got {probe}")
    check, look = None, None
    labels = y is not None and torch.is_tensor(y) and not y.is_floating_point() and y.dim() == 1
    probes = max(1, round(num_samples * PROBE_FRACTION)) if probe is None else probe
    if observed_end and x0 is not None and labels and isinstance(q, Mixture) and probes:
        def look(log_evidence: torch.Tensor) -> torch.Tensor:
            return probe_rho(net, x0, y, direction, q, log_evidence, num_samples, probes, chunk_size)
    if observed_end and posterior_check and x0 is not None and labels:
        def check(log_evidence: torch.Tensor, images: torch.Tensor) -> PosteriorCheck:
            # the sampler's model and proposal rebuilt on the checked images only
            xs, ys = x0[images], y[images]
            sub_model, sub_q = _target(net, direction, xs, ys), _proposal(net, proposal, xs, ys, direction)
            return posterior_ess_check(net, xs, ys, direction,
                                       lambda drawn: log_weights_at(sub_q, sub_model, drawn), log_evidence,
                                       num_samples, sweeps=posterior_check)
    return _particle_marginals(net, direction, model, q, num_samples, chunk_size, observed_end, "importance",
                               _cancelling_sites(net, proposal, direction), check=check, probe=look)


def importance_log_likelihood(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, num_samples: int, *,
                              proposal: str = "defensive", chunk_size: Optional[int] = None,
                              probe: Optional[int] = None, posterior_check: int = 0) -> LogLikelihood:
    """Importance-sampling estimate of ``log p(x^0 | x^n = y)`` under the reverse model (eq. 17).

    ``log p̂ = log mean_s p(x^0, h_s | y) / q(h_s)`` with ``h_s ~ q``, by default the
    defensive mixture of the forward mean-field guide given ``x^0`` and the reverse prior
    ``p(h | y)`` (weights at most ``2 p(x^0 | x^1)``); ``"mean_field"`` uses the guide
    alone, ``"forward"`` the forward chain itself.  The estimate is biased low by Jensen, consistently; its standard
    error is the delta method's ``sqrt((S/ESS − 1) / (S − 1))`` with the ESS of the
    Pareto-smoothed weights, and images whose weights have ``k̂ > 0.7`` are flagged
    (``reliable`` False, one warning): their error bars cannot be trusted.  ``probe`` and
    ``posterior_check``: as for :func:`importance_marginals` (the ESS and error bar seen from outside
    the samples too).
    """
    m = importance_marginals(net, x0, num_samples, y, direction="reverse", proposal=proposal, chunk_size=chunk_size,
                             probe=probe, posterior_check=posterior_check)
    return LogLikelihood(m.log_evidence, m.log_evidence_stderr, m.ess, m.khat, m.reliable)
