"""The defensive mixture proposal of importance sampling, drawn and scored cheaply.

``q = α q_guide + (1 − α) p_prior`` (Hesterberg 1995): half the forward mean-field guide, half the
target's own prior chain (``p(h | x⁰)`` for the forward posterior, ``p(h | y)`` for the reverse one).
Under the prior the posterior's weights are the far end's likelihood, so the mixture's weights are
bounded by ``1 / (1 − α)`` and a guide that misses the posterior cannot make them heavy-tailed.

Sampling draws each particle once, from one component, and scores it with one trace of the target:
a guide draw conditions the model on it; a prior draw *is* the model's own draw of its hidden sites;
the prior's density is the model's hidden terms, so ``log q`` adds only the factorised guide's
``Σ x·l − softplus(l)``.  (Drawing from both components and tracing each again cost three traces
of the chain per particle.)  Log-probabilities of wide layers are summed as
``Σ relu(l) − log Π σ(|l|)`` (:mod:`.logistic`): float32 ``softplus`` is not vectorised on CPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

import pyro
import torch
from pyro import poutine

from ..pyro_models import hidden_site
from .logistic import log_sigmoid_abs_sum

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["Mixture", "PARTICLE_PLATE", "DEFENSIVE_WEIGHT", "mixture_chunk", "scored_at", "log_weights_at",
           "bernoulli_sum_log_prob"]

PARTICLE_PLATE = "particles"
#: Weight of the mean-field guide in the defensive mixture; the prior chain gets the rest.
DEFENSIVE_WEIGHT = 0.5


class Mixture(NamedTuple):
    """``alpha · first + (1 − alpha) · second``, two Pyro proposals over the same hidden sites.

    ``guide_logits``: the first component's per-image bit logits ``[(batch, *shape_k)]`` when it is
    the factorised mean-field guide and the second the target's own prior chain (the defensive
    mixture), which :func:`mixture_chunk` needs."""

    first: Callable[[], None]
    second: Callable[[], None]
    alpha: float
    guide_logits: Optional[list[torch.Tensor]] = None


def bernoulli_sum_log_prob(value: torch.Tensor, logits: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``Σ log Bernoulli(value; σ(logits))`` over the last ``event_dims`` dimensions (broadcasting)."""
    shape = torch.broadcast_shapes(value.shape, logits.shape)[:-event_dims]
    dot = (value * logits).flatten(-event_dims).sum(-1)
    flat = logits.flatten(-event_dims)
    norm = flat.clamp_min(0).sum(-1) - log_sigmoid_abs_sum(flat)
    return (dot - norm).expand(shape)


def _site_log_prob(site: dict) -> torch.Tensor:
    """A Bernoulli layer's (or the class's) log-probability per particle and image, summed over the layer;
    a per-image normaliser is taken once, not once per particle."""
    fn = site["fn"]
    base = getattr(fn, "base_dist", None)
    if base is None or not hasattr(base, "_unexpanded_logits"):
        return fn.log_prob(site["value"])
    events = len(fn.event_shape)
    dot = (site["value"] * base.logits).flatten(-events).sum(-1)
    flat = base._unexpanded_logits().flatten(-events)
    return dot - (flat.clamp_min(0).sum(-1) - log_sigmoid_abs_sum(flat))


def mixture_chunk(net: "DCIM", mix: Mixture, model: Callable, size: int) -> list[tuple[object, torch.Tensor]]:
    """One chunk of ``size`` particles from the defensive mixture: ``[(model trace, log-weights)]``,
    one pair per component that drew particles (the guide's share drawn as the mixture draws it)."""
    first = int((torch.rand(size) < mix.alpha).sum())
    names = [hidden_site(k) for k in range(1, net.num_layers)]
    out = []
    for count, from_guide in ((first, True), (size - first, False)):
        if count == 0:
            continue
        drawn = {}
        if from_guide:
            for name, logits in zip(names, mix.guide_logits):
                p = torch.sigmoid(logits).expand(count, *logits.shape)
                drawn[name] = torch.rand(p.shape, dtype=p.dtype, device=p.device).lt_(p).to(p.dtype)
        with pyro.plate(PARTICLE_PLATE, count, dim=-2):
            tr = poutine.trace(poutine.condition(model, data=drawn) if drawn else model).get_trace()
        log_prior = sum(_site_log_prob(tr.nodes[n]) for n in names)
        # the observed far end; a far end left free is not weighed
        log_end = sum(_site_log_prob(site) for name, site in tr.nodes.items() if site["type"] == "sample"
                      and name != PARTICLE_PLATE and name not in names and site["is_observed"])
        log_guide = sum(bernoulli_sum_log_prob(tr.nodes[n]["value"], lg, len(lg.shape) - 1)
                        for n, lg in zip(names, mix.guide_logits))
        log_q = torch.logaddexp(math.log(mix.alpha) + log_guide, math.log(1 - mix.alpha) + log_prior)
        out.append((tr, (log_prior + log_end - log_q).expand(count, -1)))
    return out


def scored_at(proposal: Callable[[], None] | Mixture, model: Callable, drawn: dict[str, torch.Tensor]) -> tuple:
    """The model's trace at given hidden states ``{site: (particles, batch, *shape)}`` (under the
    particle plate) and ``log p(x, obs) − log q(x)`` there, for a proposal or a mixture."""
    parts = ((proposal.first, proposal.alpha), (proposal.second, 1 - proposal.alpha)) \
        if isinstance(proposal, Mixture) else ((proposal, 1.0),)
    log_q = []
    for fn, weight in parts:
        tr = poutine.trace(poutine.condition(fn, data=drawn)).get_trace()
        tr.compute_log_prob()
        log_q.append(math.log(weight) + sum(tr.nodes[n]["log_prob"] for n in drawn))
    model_tr = poutine.trace(poutine.condition(model, data=drawn)).get_trace()
    model_tr.compute_log_prob()
    # the drawn hidden sites and the real observations; a far end left free is not weighed
    log_p = sum(site["log_prob"] for name, site in model_tr.nodes.items() if site["type"] == "sample"
                and name != PARTICLE_PLATE and site["is_observed"] and site["log_prob"].dim() > 0)
    return model_tr, log_p - torch.stack(log_q).logsumexp(0)


def log_weights_at(proposal: Callable[[], None] | Mixture, model: Callable, drawn: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """``log p(x, obs) − log q(x)`` at given hidden states, ``(particles, batch)``."""
    with pyro.plate(PARTICLE_PLATE, next(iter(drawn.values())).shape[0], dim=-2):
        return scored_at(proposal, model, drawn)[1]
