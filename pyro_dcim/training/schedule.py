"""What changes over a run, as pure functions of its position (so a resumed run continues exactly):
the learning rate and the reverse term's weight."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["lr_at", "reverse_weight_at"]


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1) of the run: constant, or cosine decay to 0."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr


def reverse_weight_at(cfg: TrainConfig, epochs_done: float) -> float:
    """The reverse term's weight after ``epochs_done`` (fractional) epochs: 0 during ``--warm-start-epochs``
    (a discriminative warm start), then linear up to ``--reverse-weight`` over ``--ramp-epochs``."""
    t = epochs_done - cfg.warm_start_epochs
    if t < 0:
        return 0.0
    if t < cfg.ramp_epochs:
        return cfg.reverse_weight * t / cfg.ramp_epochs
    return cfg.reverse_weight
