"""An independent judge of generated digits: a plain CNN classifier, not a DCIM.

Class consistency measured by the run's own forward model can flatter its own reverse model
(the two share weights); a separately trained network cannot.  ``analysis/mnist_classifier.py``
trains one on MNIST (half of its batches binarised, so it reads ancestral samples too) and
saves it with :func:`save_classifier`; ``python -m pyro_dcim.draw RUN --classifier FILE`` and
``analysis/generator_comparison.py`` load it with :func:`load_classifier`.
"""

from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from .safe_load import CheckpointError, safe_load

__all__ = ["PlainCNN", "save_classifier", "load_classifier", "classifier_consistency"]


class PlainCNN(nn.Module):
    """conv 5x5 (16) - pool - conv 5x5 (32) - pool - dense 128 - 10, ReLU; input ``(N, 1, 28, 28)`` in [0, 1]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, 1, 28, 28)))


def save_classifier(net: PlainCNN, path: Union[str, os.PathLike], test_accuracy: float) -> None:
    torch.save({"state_dict": net.state_dict(), "test_accuracy": test_accuracy}, path)


def load_classifier(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu"
                    ) -> tuple[PlainCNN, float]:
    """The classifier and its MNIST test accuracy as saved; read as plain data only (``weights_only``),
    so a crafted file is a :class:`~pyro_dcim.safe_load.CheckpointError` and runs nothing."""
    # classifiers were always saved as plain data: nothing to convert, so no convert hint
    state = safe_load(path, map_location, what="classifier", convertible=False)
    net = PlainCNN()
    try:
        net.load_state_dict(state["state_dict"])
        accuracy = float(state["test_accuracy"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a classifier saved by save_classifier ({type(e).__name__}: {e})") \
            from None
    return net.to(map_location).eval(), accuracy


@torch.no_grad()
def classifier_consistency(classifier: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                           batch_size: int = 1000) -> float:
    """Fraction of ``images`` that ``classifier`` assigns to their intended ``classes``."""
    pred = torch.cat([classifier(images[i:i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    return float((pred == classes.to(pred.device)).double().mean())
