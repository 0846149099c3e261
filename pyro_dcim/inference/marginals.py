"""The common result of every estimator: :class:`Marginals`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

__all__ = ["Marginals"]


@dataclass
class Marginals:
    """Per-unit marginals ``p(x^k_i = 1 | ·)`` of a batch, from one estimator.

    ``hidden``: one tensor per hidden layer **in index order** ``x^1 … x^{n-1}`` (for
    both directions), each ``(batch, *shape_k)``.
    ``classes``: ``p(x^n | x^0)``, ``(batch, classes)`` — forward marginals only.
    ``image``: ``p(x^0_j = 1 | x^n)``, ``(batch, *input_shape)`` — reverse marginals only.
    ``stderr``: a :class:`Marginals` of the same structure holding Monte Carlo
    standard errors (``None`` for exact and mean-field results).
    ``ess``: effective sample size per image, ``(batch,)`` (sampling estimators).
    ``log_evidence``: the log-probability of the far end where it is observed,
    ``log p(x^n | x^0)`` forward or ``log p(x^0 | x^n)`` reverse, ``(batch,)``.
    ``log_evidence_stderr``: its standard error (importance sampling).
    ``log_weights``: importance log-weights ``(samples, batch)`` (importance sampling).
    ``khat``: Pareto ``k̂`` of each image's importance weights and ``reliable`` (``k̂ ≤ 0.7``),
    ``(batch,)`` (importance sampling, :mod:`.weights`).
    """

    hidden: list[torch.Tensor]
    classes: Optional[torch.Tensor] = None
    image: Optional[torch.Tensor] = None
    stderr: Optional["Marginals"] = None
    ess: Optional[torch.Tensor] = None
    log_evidence: Optional[torch.Tensor] = None
    log_weights: Optional[torch.Tensor] = None
    log_evidence_stderr: Optional[torch.Tensor] = None
    khat: Optional[torch.Tensor] = None
    reliable: Optional[torch.Tensor] = None
    method: str = ""
    direction: str = "forward"
    extra: dict = field(default_factory=dict)

    def parts(self) -> list[torch.Tensor]:
        """The estimated tensors in a fixed order: hidden layers, then classes or image."""
        return [t for t in (*self.hidden, self.classes, self.image) if t is not None]

    def flat(self) -> torch.Tensor:
        """Every estimated quantity of an image in one row: ``(batch, quantities)``."""
        return torch.cat([t.flatten(1) for t in self.parts()], 1)
