"""The literature's likelihood protocol: the importance-weighted (IS-K) estimate of ``log p(x^0)``.

With ``h_k ~ q(h | x^0)``, ``k = 1..K``, drawn by a forward (recognition) chain,

    log p̂(x^0 | y) = log (1/K) Σ_k p(x^0, h_k | y) / q(h_k | x^0)
    log p̂(x^0)     = log (1/K) Σ_k Σ_c p(c) p(x^0, h_k | c) / q(h_k | x^0)

(Burda et al. 2016; the IWAE / RWS / VIMCO papers' evaluation, there with K = 5,000 on every test
digit; DESIGN.md §9).  Both are unbiased for the likelihood before the log, so ``E log p̂ ≤ log p``:
a stochastic lower bound whose bias shrinks as K grows and as ``q`` nears the posterior (AIS on a
few digits measures it).  The class is summed out exactly rather than proposed: in the reverse
chain ``p(x^0, h | c) = p(x^{n-1} | c) Π_k p(x^{k-1} | x^k)`` only the top conditional depends on
``c``, so the sum costs one ``(m_{n-1} × C)`` product per particle, and it removes the variance a
proposed class would add.  The same particles give both estimates.

The work per particle is one ancestral draw of the forward chain and one reverse scoring: the
image's own first pre-activation is computed once per image, not per particle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Union

import torch

from ..validation import check_images, check_labels
from .flips import Flips, flips, preactivation_from_reference
from .weights import weight_diagnostics

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["ImportanceWeighted", "importance_weighted_log_likelihood", "importance_log_weights",
           "Particles", "forward_draw", "forward_log_prob", "reverse_log_joint", "sum_log1p_exp", "DEFAULT_PARTICLES"]

#: K of the literature's protocol (Burda et al. 2016; Mnih & Rezende 2016).
DEFAULT_PARTICLES = 5000
#: Rows ``particles × images`` of one scoring pass: bounds memory (a 784-pixel layer: 32 MB).
ROWS_PER_PASS = 10_000


@dataclass
class ImportanceWeighted:
    """IS-K estimates per image, ``(batch,)`` tensors, in nats of log-probability.

    ``conditional``/``marginal``: ``log p̂(x^0 | y)`` (NaN without labels) and ``log p̂(x^0)``;
    ``*_stderr``: Monte Carlo standard error of each (delta method, Pareto-smoothed weights);
    ``*_ess``: effective number of particles; ``*_khat``: Pareto k̂ of the weights (> 0.7: the
    weights are too heavy-tailed for the error bar to mean anything, and K is far from enough).
    """

    conditional: torch.Tensor
    conditional_stderr: torch.Tensor
    conditional_ess: torch.Tensor
    conditional_khat: torch.Tensor
    marginal: torch.Tensor
    marginal_stderr: torch.Tensor
    marginal_ess: torch.Tensor
    marginal_khat: torch.Tensor
    num_particles: int


Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def _bits(logits: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Bernoulli draws for logits ``(particles, batch, …)``; one generator per image makes each
    image's draws independent of which images share its batch."""
    kw = dict(device=logits.device, dtype=logits.dtype)
    if generator is None or isinstance(generator, torch.Generator):
        u = torch.rand(logits.shape, generator=generator, **kw)
    else:
        u = torch.stack([torch.rand(logits.shape[:1] + logits.shape[2:], generator=g, **kw) for g in generator], 1)
    return u.lt_(torch.sigmoid(logits)).to(logits.dtype)


def _group(m: int) -> int:
    """The largest divisor of ``m`` up to 56 (no padding copy), or 32 with padding when ``m`` has none above 7."""
    best = max(d for d in range(1, min(m, 56) + 1) if m % d == 0)
    return best if best >= 8 or best == m else 32


def sum_log1p_exp(a: torch.Tensor) -> torch.Tensor:
    """``Σ_j log(1 + e^{a_j})`` over the last dimension, three times faster than summing softplus.

    ``log(1 + e^a) = max(a, 0) + log(1 + e^{−|a|})`` with ``Σ max(a, 0) = (Σ a + Σ |a|) / 2``; the
    second terms lie in ``(0, log 2]``, so their logs are taken of products over groups of up to 56
    (at most ``2^56``, far from float32's overflow): one ``log`` serves a group, and exp and multiply
    are cheap where log is not.  The error is float rounding (relative ``~1e-7`` per term).
    """
    m = a.shape[-1]
    group = _group(m)
    if a.requires_grad and torch.is_grad_enabled():
        absolute = a.abs()
        e = (-absolute).exp() + 1
    else:  # in place: no autograd graph to keep
        absolute = a.abs()
        positive = (a.sum(-1) + absolute.sum(-1)) * 0.5
        e = absolute.neg_().exp_().add_(1)
        absolute = None
    if m % group:
        e = torch.nn.functional.pad(e, (0, group - m % group), value=1.0)
    logs = e.view(*e.shape[:-1], -1, group).prod(-1).log().sum(-1)
    if absolute is not None:
        positive = (a.sum(-1) + absolute.sum(-1)) * 0.5
    return positive + logs


def _log_prob(logits: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``Σ log Bernoulli(target; σ(logits))`` over the last ``event_dims`` dimensions."""
    logits = logits.flatten(-event_dims)
    target = target.flatten(-event_dims)
    return (logits * target).sum(-1) - sum_log1p_exp(logits)


class Particles(NamedTuple):
    """Draws of the forward chain for a batch: ``bits`` ``{k: (particles, batch, *shape_k)}``, their
    ``log_q`` ``(particles, batch)``, and per image each layer's most probable state given the
    previous reference (``references`` ``{k: (batch, *shape_k)}``) with the particles' ``flips`` from it."""

    bits: dict[int, torch.Tensor]
    log_q: torch.Tensor
    references: dict[int, torch.Tensor]
    flips: dict[int, Optional[Flips]]


def forward_draw(q: "DCIM", x0: torch.Tensor, num_particles: int, generator: Generators = None) -> Particles:
    """Draw ``h_k ~ q(h | x^0)`` down ``q``'s forward chain (eq. 13) and score them.

    The image's pre-activation of layer 1 is computed once and shared by its particles; deeper dense
    layers are computed from each image's reference state plus the columns of the particle's flipped
    units (:mod:`.flips`), which is exact and, on trained nets, several times fewer operations.
    Differentiable in ``q``'s parameters where autograd is on (the draws themselves are not).
    """
    units = q.units
    bits: dict[int, torch.Tensor] = {}
    references: dict[int, torch.Tensor] = {}
    changes: dict[int, Optional[Flips]] = {}
    log_q = x0.new_zeros(num_particles, x0.shape[0])
    for k in range(1, q.num_layers):
        if k == 1:
            reference_logits = q.conditional_logits(1, units.state(x0), "forward")
            logits = reference_logits.expand(num_particles, *reference_logits.shape)
        else:
            ref_parent = units.state(references[k - 1])
            reference_logits = q.conditional_logits(k, ref_parent, "forward")
            logits = units.bit_logits(preactivation_from_reference(q, k, "forward", ref_parent,
                                                                   units.state(bits[k - 1]), changes[k - 1]))
        references[k] = (reference_logits.detach() > 0).to(x0.dtype)
        bits[k] = _bits(logits.detach(), generator)
        changes[k] = None if torch.is_grad_enabled() else flips(bits[k], references[k], q)  # no-grad path only
        log_q = log_q + _log_prob(logits, bits[k], len(q.shapes[k]))
    return Particles(bits, log_q, references, changes)


def forward_log_prob(q: "DCIM", x0: torch.Tensor, bits: dict[int, torch.Tensor]) -> torch.Tensor:
    """``log q(h | x^0)`` of given hidden states ``{k: bits (particles, batch, *shape_k)}``: ``(particles, batch)``."""
    parent, total = q.units.state(x0), 0.0
    for k in range(1, q.num_layers):
        total = total + _log_prob(q.conditional_logits(k, parent, "forward"), bits[k], len(q.shapes[k]))
        parent = q.units.state(bits[k])
    return total


def reverse_log_joint(net: "DCIM", bits: dict[int, torch.Tensor], x0: torch.Tensor,
                      particles: Optional[Particles] = None) -> torch.Tensor:
    """``log p(x^0, h | c)`` of the reverse chain (eq. 17) for every class ``c``: ``(particles, batch, classes)``.

    The class enters only through the top conditional ``p(x^{n-1} | c)``, scored for all classes with
    one ``(m_{n-1} × C)`` product; the rest, ``Σ_k log p(x^{k-1} | x^k)`` down to the image, is shared.
    With ``particles`` (the draw of ``bits``), dense layers start from the references (:mod:`.flips`).
    """
    n, units = net.num_layers, net.units
    classes = torch.eye(net.num_classes, dtype=x0.dtype, device=x0.device)
    top = net.conditional_logits(n - 1, classes, "reverse").flatten(1)             # (C, m_{n-1})
    log_p = bits[n - 1].flatten(2) @ top.T - sum_log1p_exp(top)                   # (P, B, C)
    rest = 0.0
    for k in range(n - 1, 0, -1):
        if particles is None:
            logits = net.conditional_logits(k - 1, units.state(bits[k]), "reverse")
        else:
            logits = units.bit_logits(preactivation_from_reference(
                net, k - 1, "reverse", units.state(particles.references[k]), units.state(bits[k]),
                particles.flips[k]))
        rest = rest + _log_prob(logits, bits[k - 1] if k > 1 else x0, len(net.shapes[k - 1]))
    return log_p + rest.unsqueeze(-1)


@torch.no_grad()
def importance_log_weights(net: "DCIM", x0: torch.Tensor, num_particles: int, *,
                           proposal: Optional["DCIM"] = None, class_prior: Optional[torch.Tensor] = None,
                           generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class log-weights ``log p(x^0, h_k | c) − log q(h_k | x^0)`` and ``log p(c)``.

    ``x0``: ``(batch, *input_shape)`` binary images.  ``proposal``: the DCIM whose forward chain
    draws ``h`` (default ``net`` itself; an untied net's forward weights are its recognition
    chain).  ``generator``: one, or one per image (then an image's weights do not depend on the
    other images of the batch).  Returns ``(log_w, log_prior)``: ``log_w`` is
    ``(num_particles, batch, classes)``, ``log_prior`` ``(classes,)`` (the net's own ``p(c)`` unless ``class_prior``).
    """
    drawn = forward_draw(net if proposal is None else proposal, x0, num_particles, generator)
    log_w = reverse_log_joint(net, drawn.bits, x0, drawn) - drawn.log_q.unsqueeze(-1)
    if class_prior is None:
        log_prior = net.class_log_prior().detach().to(x0)
    else:
        log_prior = class_prior.to(x0).log()
    return log_w, log_prior


def _check(net: "DCIM", x0: torch.Tensor, y: Optional[torch.Tensor], num_particles: int,
           class_prior: Optional[torch.Tensor]) -> None:
    check_images(x0, net.input_shape, dtype=net.input_bias.dtype)
    if not ((x0 == 0) | (x0 == 1)).all():
        raise ValueError("x0 must be binary (0/1) images: binarise them first (the likelihood of intensities "
                         "is not a probability)")
    if y is not None:
        check_labels(y, net.num_classes)
        if y.shape != x0.shape[:1]:
            raise ValueError(f"y must hold one class per image, shape ({x0.shape[0]},), got {tuple(y.shape)}")
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2, got {num_particles}")
    if class_prior is not None:
        if class_prior.shape != (net.num_classes,) or (class_prior < 0).any() or \
                not math.isclose(float(class_prior.sum()), 1.0, rel_tol=1e-5):
            raise ValueError(f"class_prior must be {net.num_classes} probabilities summing to 1")


@torch.no_grad()
def importance_weighted_log_likelihood(net: "DCIM", x0: torch.Tensor, y: Optional[torch.Tensor] = None,
                                       num_particles: int = DEFAULT_PARTICLES, *,
                                       proposal: Optional["DCIM"] = None,
                                       class_prior: Optional[torch.Tensor] = None,
                                       generator: Generators = None,
                                       warn: bool = True) -> ImportanceWeighted:
    """The IS-K estimates of ``log p(x^0 | y)`` and ``log p(x^0)`` of every image (module docstring).

    ``x0``: ``(batch, *input_shape)``, binary.  ``y``: the classes ``(batch,)`` (``None``: only the
    unconditional estimate).  ``class_prior``: ``p(c)`` of the unconditional one (default uniform).
    ``generator`` (one, or one per image) makes the draws reproducible.  Images are scored a few at a time, so memory
    stays bounded however large ``num_particles`` is; the Pareto k̂ warning (``warn``) is one line
    naming how many images are flagged.
    """
    _check(net, x0, y, num_particles, class_prior)
    if not (generator is None or isinstance(generator, torch.Generator)) and len(generator) != len(x0):
        raise ValueError(f"give one generator per image: {len(generator)} for {len(x0)} images")
    per_pass = max(1, ROWS_PER_PASS // num_particles)
    cond, marg = [], []
    for i in range(0, len(x0), per_pass):
        g = generator if generator is None or isinstance(generator, torch.Generator) else \
            generator[i:i + per_pass]
        log_w, log_prior = importance_log_weights(net, x0[i:i + per_pass], num_particles, proposal=proposal,
                                                  class_prior=class_prior, generator=g)
        marg.append((log_w + log_prior).logsumexp(-1))
        if y is not None:
            idx = y[i:i + per_pass].to(log_w.device).long()
            cond.append(log_w.gather(-1, idx.view(1, -1, 1).expand(num_particles, -1, 1)).squeeze(-1))
    marg_w = torch.cat(marg, 1)
    m = _summarise(marg_w, warn, "importance-weighted log p(x0)")
    if y is None:
        nan = torch.full_like(m[0], math.nan)
        c = (nan, nan, nan, nan)
    else:
        c = _summarise(torch.cat(cond, 1), warn, "importance-weighted log p(x0 | y)")
    return ImportanceWeighted(*c, *m, num_particles=num_particles)


def _summarise(log_w: torch.Tensor, warn: bool, what: str) -> tuple[torch.Tensor, ...]:
    estimate = log_w.double().logsumexp(0) - math.log(log_w.shape[0])
    d = weight_diagnostics(log_w.double(), what=what, warn=warn)
    return estimate, d.stderr, d.ess, d.khat
