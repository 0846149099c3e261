"""Labels optional: the particles of reweighted wake-sleep when some images have no label (DESIGN.md §10).

An unlabelled image's class ``x^n`` is latent, and the generator is trained by
``log p(x^0) = log Σ_c p(c) p(x^0 | c)``.  Particles ``h_s ~ q(h | x^0)`` come from the forward
chain as for labelled images (``Chain.sample``, the draws of
:func:`~pyro_dcim.objectives.wake_particles`).  In the reverse chain only the top conditional
``p(x^{n-1} | c)`` depends on the class, so every class's ``log p(x^0, h_s | c)`` costs one
``(m_{n-1} × C)`` product per particle (the IS-K protocol's
:func:`~pyro_dcim.inference.importance_weighted.reverse_log_joint`).  The class then enters the weights

* ``"sum"``: exactly, ``w_s = Σ_c p(c) p(x^0, h_s | c) / q(h_s | x^0)``, or
* ``"sample"``: proposed with the layers by the forward chain, ``y_s ~ p(x^n | x^{n-1}_s)``, and
  ``w_s = p(y_s) p(x^0, h_s | y_s) / (q(h_s | x^0) p(y_s | x^{n-1}_s))``.

Both are unbiased for ``p(x^0)``; the sum has no class noise in its weights and costs the same.
The generator's posterior over the class, ``π_c = Σ_s w̃_s p(c | x^0, h_s)`` (``"sample"``:
``Σ_s w̃_s [y_s = c]``), is what the classifier learns from an unlabelled image
(docs/semi_supervised.md derives it).  Labelled rows are scored with their class as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .chain import Chain
from .inference.importance_weighted import forward_log_prob, reverse_log_joint
from .validation import UNLABELLED, check_partial_labels

if TYPE_CHECKING:
    from .model import DCIM

__all__ = ["UNLABELLED", "CLASS_ESTIMATES", "MixedParticles", "mixed_particles", "check_partial_labels"]

#: how an unlabelled image's class enters its weights
CLASS_ESTIMATES = ("sum", "sample")


@dataclass
class MixedParticles:
    """``K`` particles per image of a batch that mixes labelled and unlabelled rows; ``(K, batch)`` unless said.

    ``log_p``: ``log p(x^0, h_s | y)`` (labelled) or ``log p(x^0, h_s)`` (``"sum"``) or
    ``log p(x^0, h_s, y_s)`` (``"sample"``), differentiable in the generator; ``log_q``:
    ``log q(h_s | x^0)``, differentiable in the recognition chain; ``log_w``: the log-weights, detached;
    ``posterior``: ``(batch, classes)``, the class posterior the weights give (one-hot for labelled rows),
    detached.
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_w: torch.Tensor
    posterior: torch.Tensor


def mixed_particles(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, particles: int, class_estimate: str = "sum",
                    generator: Optional[torch.Generator] = None,
                    class_prior: Optional[torch.Tensor] = None) -> MixedParticles:
    """Draw and score ``particles`` forward-chain particles per image; rows with ``y == UNLABELLED`` have a
    latent class, handled as ``class_estimate`` says (module docstring).  ``class_prior``: ``p(c)``, the
    net's own unless given; a learned one gets its gradient through ``log_p`` (both kinds of row)."""
    if class_estimate not in CLASS_ESTIMATES:
        raise ValueError(f"class_estimate must be one of {', '.join(CLASS_ESTIMATES)}, got {class_estimate!r}")
    c = net.num_classes
    labelled = y >= 0
    forward = Chain(net, "forward")
    flat = forward.sample(forward.start_state(x0, None), particles, generator)   # no gradient through draws
    bits = {k: b.reshape(*b.shape[:2], *net.shapes[k]) for k, b in flat.items()}
    log_q = forward_log_prob(net, x0, bits)
    log_joint = reverse_log_joint(net, bits, x0)                                  # (K, B, C): log p(x^0, h | c)
    log_prior = net.class_log_prior().to(x0) if class_prior is None else class_prior.to(x0).log()
    seen = y.clamp(min=0)
    given = log_joint.gather(-1, seen.view(1, -1, 1).expand(particles, -1, 1)).squeeze(-1)
    # a learned p(c) learns from the labelled rows' classes too (log p(y) shifts no weight: not in log_w)
    given_p = given + log_prior[seen] if log_prior.requires_grad else given
    with_prior = log_joint + log_prior
    if class_estimate == "sum":
        latent = with_prior.logsumexp(-1)                                           # log p(x^0, h)
        latent_w = latent.detach() - log_q.detach()
        per_particle = torch.softmax(with_prior.detach(), -1)                      # p(c | x^0, h_s)
    else:
        top = net.units.state(bits[net.num_layers - 1])
        class_logits = net.conditional_logits(net.num_layers, top).detach()       # p(x^n | x^{n-1}_s), forward
        drawn = torch.multinomial(torch.softmax(class_logits, -1).reshape(-1, c), 1, generator=generator)
        drawn = drawn.view(particles, -1)
        latent = with_prior.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)            # log p(x^0, h_s, y_s)
        log_q_class = torch.log_softmax(class_logits, -1).gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
        latent_w = latent.detach() - log_q.detach() - log_q_class
        per_particle = F.one_hot(drawn, c).to(x0.dtype)
    log_p = torch.where(labelled, given_p, latent)
    log_w = torch.where(labelled, given.detach() - log_q.detach(), latent_w)
    posterior = (torch.softmax(log_w, 0).unsqueeze(-1) * per_particle).sum(0)
    posterior = torch.where(labelled.unsqueeze(-1), F.one_hot(seen, c).to(x0.dtype), posterior)
    return MixedParticles(log_p, log_q, log_w, posterior)
