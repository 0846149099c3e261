"""Learning objectives as plain functions of a batch ``(x0, y)``.

* :func:`discriminative_loss`: ``-log p(x^n | x^0)`` under the forward mean field
  (eq. 15), i.e. the DNN's cross-entropy;
* :func:`bidirectional_loss`: eq. (21), ``-log p(x^n | x^0) - log p(x^0 | x^n)``
  with both terms from the tied mean-field passes;
* :func:`sampled_layer_loss`: eq. (22), the reverse term from a sampled layer
  ``x̃^k ~ p(x^k | x^0)`` instead of the class.

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

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .inference.variational import fit_mean_field
from .model import DCIM
from .validation import check_labels

__all__ = ["ObjectiveParts", "discriminative_loss", "bidirectional_loss", "sampled_layer_loss", "sampled_layer",
           "class_reverse_nll", "OBJECTIVES", "get_objective"]


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
                        approximation: str = "first-order", **_: object) -> ObjectiveParts:
    """Cross-entropy of the forward mean-field pass (approximate conditional ML).

    The reverse parts are reported (computed without gradient) unless
    ``report_reverse=False``; they never enter ``total``.
    """
    check_labels(y, net.num_classes)
    logits = _forward_logits(net, x0, approximation)
    if report_reverse:
        with torch.no_grad():
            rev = class_reverse_nll(net, x0, y, approximation).mean()
    else:
        rev = logits.new_tensor(float("nan"))
    return _combine(net, logits, y, rev, 0.0, "mean", train_reverse=False)


def bidirectional_loss(net: DCIM, x0: torch.Tensor, y: torch.Tensor, *, reverse_weight: float = 1.0,
                       reduction: str = "mean", approximation: str = "first-order", **_: object) -> ObjectiveParts:
    """Eq. (21): ``-log p(x^n | x^0) - w · log p(x^0 | x^n)``, both by mean field."""
    check_labels(y, net.num_classes)
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
                       generator: Optional[torch.Generator] = None, approximation: str = "first-order",
                       **_: object) -> ObjectiveParts:
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
    check_labels(y, net.num_classes)
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


OBJECTIVES = {
    "discriminative": discriminative_loss,
    "bidirectional": bidirectional_loss,
    "sampled-layer": sampled_layer_loss,
}


def get_objective(name: str):
    """The objective function for ``"discriminative" | "bidirectional" | "sampled-layer"``."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None
