"""Learning objectives as plain functions of a batch ``(x0, y)``.

* :func:`discriminative_loss`: ``-log p(x^n | x^0)`` under the forward mean field
  (eq. 15), i.e. the DNN's cross-entropy;
* :func:`bidirectional_loss`: eq. (21), ``-log p(x^n | x^0) - log p(x^0 | x^n)``
  with both terms from the tied mean-field passes;
* :func:`sampled_layer_loss`: eq. (22), the reverse term from a sampled layer
  ``x̃^k ~ p(x^k | x^0)`` instead of the class;
* :func:`reweighted_wake_sleep_loss` (``"rws"``, ``"wake-sleep"``): the reverse chain's true
  likelihood ``log p(x^0 | x^n)`` learned with the forward chain, the same weights, as proposal
  (DESIGN.md §8).

Every loss is a batch mean and returns :class:`ObjectiveParts`.  The reverse
term enters ``total`` as ``reverse_weight * reverse_nll_per_pixel`` (the binary
cross-entropy per pixel the paper reports, ``reduction="mean"``) or
``reverse_weight * reverse_nll_sum`` (the exact ``-log p(x^0 | ·)`` in nats per
image, ``reduction="sum"``).

Every loss takes ``approximation`` (:mod:`pyro_dcim.approximations`): the passes that give
``p(x^n | x^0)`` and ``p(x^0 | ·)``.  With ``"variational"`` the reverse term is minus the
mean-field lower bound on ``log p(x^0 | ·)``, and the class logits are the bounds on
``log p(c | x^0)``, so training ascends bounds (gradients by the envelope theorem).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .approximations.variational import fit_mean_field
from .chain import Chain
from .inference.energy import ChainEnergy
from .model import DCIM
from .semi_supervised import check_partial_labels, mixed_particles
from .validation import check_class_batch, check_labels

__all__ = ["ObjectiveParts", "discriminative_loss", "bidirectional_loss", "sampled_layer_loss", "sampled_layer",
           "class_reverse_nll", "reweighted_wake_sleep_loss", "wake_particles", "sleep_dreams",
           "GENERATIVE", "OBJECTIVES", "get_objective", "objective_settings"]


@dataclass
class ObjectiveParts:
    """``total`` (to minimise) and its parts, batch means in nats.

    ``forward_nll``: ``-log p(x^n | x^0)``; ``reverse_nll_sum``: ``-log p(x^0 | ·)``
    summed over pixels; ``reverse_nll_per_pixel``: that divided by the pixel count;
    ``logits``: the forward class logits (for accuracy).  Parts other than
    ``total`` are detached.
    """

    total: torch.Tensor
    forward_nll: torch.Tensor
    reverse_nll_per_pixel: torch.Tensor
    reverse_nll_sum: torch.Tensor
    logits: torch.Tensor
    code_nll: Optional[torch.Tensor] = None


def class_reverse_nll(net: DCIM, x0: torch.Tensor, y: torch.Tensor, approximation: str = "first-order") -> torch.Tensor:
    """``-log p(x^0 | x^n = y)`` per image under the reverse mean field, shape ``(batch,)``.

    Equals the binary cross-entropy of ``net.reverse_mean_field(y).logits`` summed over pixels, but uses that
    the image logits ``l`` depend on the class only: ``Σ_j softplus(l_j) - x_j l_j``
    is a per-class constant minus one ``(batch × pixels) · (pixels × classes)``
    product, so no per-image pass or per-pixel loss is formed.  ``"variational"``:
    minus the lower bound, one fit per image.
    """
    if approximation == "variational" and net.num_layers > 1:
        return _reverse_bound_nll(net, net.class_state(y), net.num_layers, x0)
    logits = net.class_reverse_mean_field(approximation).logits.flatten(1)  # (C, D)
    log_z = F.softplus(logits).sum(1)
    return log_z[y] - (x0.flatten(1) @ logits.T).gather(1, y[:, None]).squeeze(1)


def _reverse_bound_nll(net: DCIM, start: torch.Tensor, layer: int, x0: torch.Tensor) -> torch.Tensor:
    """Minus the variational bound on ``log p(x^0 | x^layer = start)``, per image."""
    return -fit_mean_field(net, start, direction="reverse", layer=layer, end=x0,
                           x0_state=net.units.state(x0)).elbo


def _check_batch(net: DCIM, x0: torch.Tensor, y: torch.Tensor) -> None:
    """One class index per image (shapes only: free on the training loop's hot path)."""
    check_labels(y, net.num_classes)
    if isinstance(x0, torch.Tensor):   # a non-tensor x0 is the image check's to report
        check_class_batch(y, x0, net.input_shape)


def _forward_logits(net: DCIM, x0: torch.Tensor, approximation: str) -> torch.Tensor:
    return net(x0) if approximation == "first-order" else net.forward_mean_field(x0, approximation=approximation).logits


def _combine(net: DCIM, logits: torch.Tensor, y: torch.Tensor, rev_sum: torch.Tensor,
             reverse_weight: float, reduction: str, train_reverse: bool) -> ObjectiveParts:
    """``rev_sum``: the batch mean of ``-log p(x^0 | ·)`` summed over pixels."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' (per pixel) or 'sum', got {reduction!r}")
    forward = F.cross_entropy(logits, y)
    rev_pixel = rev_sum / net.num_pixels
    total = forward
    if train_reverse:
        total = total + reverse_weight * (rev_pixel if reduction == "mean" else rev_sum)
    return ObjectiveParts(total, forward.detach(), rev_pixel.detach(), rev_sum.detach(), logits.detach())


def discriminative_loss(net: DCIM, x0: torch.Tensor, y: torch.Tensor, *, report_reverse: bool = True,
                        approximation: str = "first-order", unlabelled: Optional[str] = None) -> ObjectiveParts:
    """Cross-entropy of the forward mean-field pass (approximate conditional ML).

    The reverse parts are reported (computed without gradient) unless
    ``report_reverse=False``; they never enter ``total``.  ``unlabelled`` (any value): rows with
    ``y == UNLABELLED`` are left out, so the loss is the labelled rows' cross-entropy summed and
    divided by the batch size (the supervised-only baseline of ``--labels N``).
    """
    if unlabelled is not None:
        return _labelled_rows_only(net, x0, y, approximation)
    _check_batch(net, x0, y)
    logits = _forward_logits(net, x0, approximation)
    if report_reverse:
        with torch.no_grad():
            rev = class_reverse_nll(net, x0, y, approximation).mean()
    else:
        rev = logits.new_tensor(float("nan"))
    return _combine(net, logits, y, rev, 0.0, "mean", train_reverse=False)


def _labelled_rows_only(net: DCIM, x0: torch.Tensor, y: torch.Tensor, approximation: str) -> ObjectiveParts:
    check_partial_labels(y, net.num_classes, len(x0))
    labelled = (y >= 0).to(x0.dtype)
    logits = _forward_logits(net, x0, approximation)
    nll = (F.cross_entropy(logits, y.clamp(min=0), reduction="none") * labelled).sum()
    nan = logits.new_tensor(float("nan")).detach()
    return ObjectiveParts(nll / len(x0), (nll / labelled.sum().clamp(min=1)).detach(), nan, nan, logits.detach())


def bidirectional_loss(net: DCIM, x0: torch.Tensor, y: torch.Tensor, *, reverse_weight: float = 1.0,
                       reduction: str = "mean", approximation: str = "first-order") -> ObjectiveParts:
    """Eq. (21): ``-log p(x^n | x^0) - w · log p(x^0 | x^n)``, both by mean field."""
    _check_batch(net, x0, y)
    logits = _forward_logits(net, x0, approximation)
    rev = class_reverse_nll(net, x0, y, approximation).mean()
    return _combine(net, logits, y, rev, reverse_weight, reduction, train_reverse=True)


def sampled_layer(net: DCIM, layer: Optional[int] = None, code_weight: float = 0.0) -> int:
    """The layer ``k`` that (22) samples: ``n-1`` by default; a ``ValueError`` unless it is hidden."""
    n = net.num_layers
    k = n - 1 if layer is None else layer
    if not 1 <= k < n:
        raise ValueError(f"the sampled layer must be a hidden layer 1..{n - 1}, got {k}")
    if code_weight and k != n - 1:
        raise ValueError(f"code_weight needs the sampled layer to be n-1 = {n - 1}, got {k}")
    return k


def sampled_layer_loss(net: DCIM, x0: torch.Tensor, y: torch.Tensor, *, layer: Optional[int] = None,
                       reverse_weight: float = 1.0, reduction: str = "mean", code_weight: float = 0.0,
                       generator: Optional[torch.Generator] = None, approximation: str = "first-order"
                       ) -> ObjectiveParts:
    """Eq. (22): ``-log p(x^n | x^0) - w · log p(x^0 | x̃^k)``, ``x̃^k ~ p(x^k | x^0)``.

    ``x̃^k`` is one Bernoulli sample of layer ``k`` (default ``n-1``) given the
    mean field below it; it is detached, so no gradient flows through the sample
    and ``b^k`` gets none from the reverse term.

    (22) never trains the reverse link from the class to the sampled layer,
    ``p(x^{n-1} | x^n) = Π Bernoulli(σ(W^nᵀ x^n + b^{n-1}))``, which generation
    samples from.  ``code_weight > 0`` (only for ``k = n-1``) adds
    ``-code_weight · log p(x̃^{n-1} | x^n = y)`` so that link learns the codes the
    reverse pass is trained on (a wake-phase term; reported as ``code_nll``, nats
    per image).  The default 0 is the paper's objective.
    """
    _check_batch(net, x0, y)
    k = sampled_layer(net, layer, code_weight)
    mf = net.forward_mean_field(x0, approximation=approximation)
    probs = torch.sigmoid(net.units.bit_logits(mf.preactivations[k - 1].detach()))
    # u < p, written into the uniforms: an exact Bernoulli(p) draw, twice as fast as torch.bernoulli on CPU
    bits = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype).lt_(probs)
    if approximation == "variational" and k > 1:
        rev = _reverse_bound_nll(net, net.units.state(bits), k, x0).mean()
    else:
        image_logits = net.reverse_mean_field(net.units.state(bits), layer=k, approximation=approximation).logits
        # the batch mean straight from the fused loss: no per-pixel tensor is kept for backward
        rev = F.binary_cross_entropy_with_logits(image_logits, x0, reduction="sum") / x0.shape[0]
    parts = _combine(net, mf.logits, y, rev, reverse_weight, reduction, train_reverse=True)
    if code_weight:
        code_logits = net.units.bit_logits(net.class_reverse_mean_field().preactivations[0])  # (C, *shape)
        code = F.binary_cross_entropy_with_logits(code_logits[y], bits, reduction="sum") / x0.shape[0]
        parts.total = parts.total + code_weight * code
        parts.code_nll = code.detach()
    return parts


def wake_particles(net: DCIM, x0: torch.Tensor, y: torch.Tensor, particles: int,
                   generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``K`` draws ``h_s ~ q(h | x^0)`` of the forward chain (eq. 13) scored by both chains.

    Returns ``(log p(x^0, h_s | y), log q(h_s | x^0))``, each ``(K, batch)`` and differentiable in the
    parameters (the draws are not: ``q`` is discrete).  ``log p`` is the reverse chain (eq. 17-18):
    ``log p(x^{n-1} | y) + Σ_k log p(x^{k-1} | x^k)`` down to the image.
    """
    forward = Chain(net, "forward")
    bits = forward.sample(forward.start_state(x0, y), particles, generator)
    terms = ChainEnergy(net, x0, y).terms(bits, ("forward", "reverse", "reverse_end"))
    return terms["reverse"] + terms["reverse_end"], terms["forward"]


def sleep_dreams(net: DCIM, num: int, class_prior: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Dreams ``(x^0, y, h)`` of the reverse model: ``y ~ p(y)`` (the net's own unless ``class_prior``),
    ``h ~ p(h | y)`` down the reverse chain, binary ``x^0 ~ p(x^0 | x^1)``.  ``h`` as ``{k: (1, num, m_k)}``."""
    device, dtype = net.input_bias.device, net.input_bias.dtype
    prior = net.class_prior_probs().float().to(device) if class_prior is None else class_prior.to(device)
    with torch.no_grad():
        y = torch.multinomial(prior, num, replacement=True, generator=generator)
        reverse = Chain(net, "reverse")
        h = reverse.sample(reverse.start_state(None, y), 1, generator)
        x1 = net.units.state(h[1].reshape(1, num, *net.shapes[1]))
        p0 = torch.sigmoid(net.conditional_logits(0, x1, "reverse")[0])
        x0 = torch.rand(p0.shape, generator=generator, device=device, dtype=dtype).lt_(p0).to(dtype)
    return x0, y, h


def reweighted_wake_sleep_loss(net: DCIM, x0: torch.Tensor, y: torch.Tensor, *, particles: int = 5,
                               wake_phi_weight: float = 1.0, sleep_weight: float = 0.0,
                               reverse_weight: float = 1.0, reduction: str = "mean",
                               generator: Optional[torch.Generator] = None, unlabelled: Optional[str] = None,
                               unlabelled_class_weight: float = 0.0, unlabelled_class_threshold: float = 0.0,
                               approximation: str = "first-order") -> ObjectiveParts:
    """Tied reweighted wake-sleep (Bornschein & Bengio 2015, DESIGN.md §8) beside ``-log p(x^n | x^0)``.

    With ``h_s ~ q(h | x^0)``, ``s = 1..K`` (the forward chain) and per-image normalised weights
    ``w̃_s ∝ p(x^0, h_s | y) / q(h_s | x^0)`` (a particle dimension per image, not one weight per batch
    as ``pyro.infer.ReweightedWakeSleep``), the loss is

        -log p(x^n | x^0) + w · [ -Σ_s w̃_s log p(x^0, h_s | y)                       (wake-θ)
                                  - λ_wake Σ_s w̃_s log q(h_s | x^0)                   (wake-φ)
                                  - λ_sleep log q(h̃, ỹ | x̃^0) ]                       (sleep-φ)

    with ``w̃`` detached and ``(ỹ, h̃, x̃^0)`` a dream of the reverse model (:func:`sleep_dreams`, as many
    as images).  Tied, θ and φ are the same ``W, b``: the three gradients are summed with these weights.
    Wake-θ is the exact gradient of the IWAE bound ``log mean_s w_s`` in θ for the drawn particles; the
    bound's gradient in φ would need a score function (``q`` is discrete), which RWS replaces by wake-φ.
    ``reverse_nll_sum`` reports ``-log mean_s w_s`` (a K-sample bound on ``-log p(x^0 | y)``, nats).
    ``reduction="mean"`` divides the bracket by the pixel count, like the other objectives.

    ``unlabelled`` (``"sum"`` or ``"sample"``): rows with ``y == UNLABELLED`` have a latent class, and
    their particles are weighted by ``p(x^0, h_s) / q(h_s | x^0)`` (:mod:`pyro_dcim.semi_supervised`:
    the class summed exactly or proposed by the forward chain).  Their class term is the cross-entropy of
    ``q(x^n | x^0)`` against the weights' class posterior ``π``, times ``unlabelled_class_weight``, on the rows
    where ``max_c π_c >= unlabelled_class_threshold`` (the generator is sure of the class);
    ``forward_nll`` then reports the class term per row unweighted, ``reverse_nll_sum`` the bound on
    ``-log p(x^0 | y)`` for labelled rows and on ``-log p(x^0)`` for the others (docs/semi_supervised.md).
    ``approximation``: the forward pass of the class term (first-order (2) or AP2); the particles are exact
    draws either way.
    """
    if unlabelled is not None:
        check_partial_labels(y, net.num_classes, len(x0))
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' (per pixel) or 'sum', got {reduction!r}")
    else:
        _check_batch(net, x0, y)
    if net.num_layers < 2:
        raise ValueError("reweighted wake-sleep needs a hidden layer (a net without one is an RBM-like pair)")
    if particles < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    logits = _forward_logits(net, x0, approximation)
    if unlabelled is None:
        log_p, log_q = wake_particles(net, x0, y, particles, generator)
        log_w = (log_p - log_q).detach()
    else:
        mixed = mixed_particles(net, x0, y, particles, unlabelled, generator)
        log_p, log_q, log_w = mixed.log_p, mixed.log_q, mixed.log_w
    w = torch.softmax(log_w, 0)
    bound = log_w.logsumexp(0) - math.log(particles)
    generative = -(w * log_p).sum(0).mean()
    if wake_phi_weight:
        generative = generative - wake_phi_weight * (w * log_q).sum(0).mean()
    if sleep_weight:
        dx, dy, dh = sleep_dreams(net, len(x0), generator=generator)
        dream = ChainEnergy(net, dx, dy).terms(dh, ("forward", "forward_end"))
        generative = generative - sleep_weight * (dream["forward"] + dream["forward_end"]).mean()
    if unlabelled is None:
        parts = _combine(net, logits, y, -bound.mean(), 0.0, reduction, train_reverse=False)
    else:
        parts = _class_term(net, logits, y, mixed.posterior, -bound.mean(), unlabelled_class_weight,
                            unlabelled_class_threshold)
    scale = 1.0 / net.num_pixels if reduction == "mean" else 1.0
    parts.total = parts.total + reverse_weight * scale * generative
    return parts


def _class_term(net: DCIM, logits: torch.Tensor, y: torch.Tensor, posterior: torch.Tensor, rev_sum: torch.Tensor,
                unlabelled_weight: float, threshold: float = 0.0) -> ObjectiveParts:
    """The class term of a batch with unlabelled rows: ``-Σ_c π_c log q(c | x^0)`` per row (``π`` one-hot for a
    labelled row, the generator's posterior for an unlabelled one), the unlabelled rows weighted, and only
    those whose ``π`` puts at least ``threshold`` on its top class."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"unlabelled_class_threshold must be in [0, 1), got {threshold}")
    per_row = -(posterior * torch.log_softmax(logits, -1)).sum(-1)
    sure = posterior.max(-1).values >= threshold
    weight = torch.where(y >= 0, 1.0, torch.where(sure, unlabelled_weight, 0.0)).to(per_row.dtype)
    rev_sum = rev_sum.detach()
    return ObjectiveParts((weight * per_row).mean(), per_row.mean().detach(), rev_sum / net.num_pixels, rev_sum,
                          logits.detach())


def _named(fn, **defaults):
    """``fn`` with other default settings, under a new objective name (settings given still win).
    Its signature is ``fn``'s (``functools.wraps``), so :func:`objective_settings` sees ``fn``'s settings."""
    @functools.wraps(fn)
    def objective(net: DCIM, x0: torch.Tensor, y: torch.Tensor, **kwargs) -> ObjectiveParts:
        for key, value in defaults.items():
            if kwargs.get(key) is None:
                kwargs[key] = value
        return fn(net, x0, y, **kwargs)
    objective.defaults = defaults
    return objective


#: the objective ``--objective generative`` runs (analysis/results/generator_comparison.md says why); its
#: training settings (untied weights, nats per image) are ``pyro_dcim.training.config.OBJECTIVE_DEFAULTS``
GENERATIVE = "rws"

OBJECTIVES = {
    "discriminative": discriminative_loss,
    "bidirectional": bidirectional_loss,
    "sampled-layer": sampled_layer_loss,
    # tied reweighted wake-sleep: wake-θ + wake-φ; and wake-θ + sleep-φ (DESIGN.md §8)
    "rws": _named(reweighted_wake_sleep_loss, wake_phi_weight=1.0, sleep_weight=0.0),
    "wake-sleep": _named(reweighted_wake_sleep_loss, wake_phi_weight=0.0, sleep_weight=1.0),
}
# rws whose recognition chain learns mostly from the class term: wake-phi at 1/100
OBJECTIVES["generative"] = _named(reweighted_wake_sleep_loss, wake_phi_weight=0.01, sleep_weight=0.0)


def get_objective(name: str):
    """The objective function for a name in :data:`OBJECTIVES` (``"discriminative"``, ``"bidirectional"``, ...)."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None


def objective_settings(objective, settings: dict[str, object]) -> dict[str, object]:
    """The entries of ``settings`` that ``objective`` takes as keyword arguments: an objective is
    called with exactly its own settings, and one it does not know is a ``TypeError``."""
    params = inspect.signature(objective).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(settings)
    own = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    return {k: v for k, v in settings.items() if k in own}
