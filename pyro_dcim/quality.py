"""Generated images in numbers: class consistency and within-class diversity relative to real digits,
with the measures of :mod:`pyro_dcim.generate`.  Used by ``analysis/`` to compare generators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .data import binarize
from .generate import Temperature, class_consistency, class_grid, generate, mean_pairwise_distance
from .model import DCIM

__all__ = ["SampleQuality", "sample_quality"]


@dataclass
class SampleQuality:
    """Generated images of one mode in numbers (see :func:`sample_quality`)."""

    mode: str
    per_class: int
    consistency: float
    diversity: float
    real_diversity: float

    @property
    def relative_diversity(self) -> float:
        """Within-class diversity of the generated images over that of real digits (1: as varied)."""
        return self.diversity / self.real_diversity


def sample_quality(net: DCIM, real_images: torch.Tensor, real_labels: torch.Tensor, mode: str,
                   per_class: int = 100, seed: int = 0, layer: Optional[int] = None,
                   temperature: Temperature = 1.0) -> SampleQuality:
    """``per_class`` images of every class generated in ``mode`` (:func:`pyro_dcim.generate.generate`):
    the fraction the forward model assigns to the intended class, and the mean within-class
    pairwise distance next to that of the real digits.

    Ancestral samples are binary, so their reference is the real digits binarised by one
    Bernoulli draw per pixel (pixel noise alone adds distance); the other modes return
    probabilities and are compared with the intensities.  ``layer``: the lowest sampled layer of
    ``"sample-layer"`` mode (default ``n-1``); ``temperature``: of its sampled layers, one or ``{k: T}``
    (default 1, the model).
    """
    classes = class_grid(net.num_classes, per_class, net.input_bias.device)
    images = generate(net, classes, mode, layer=layer, seed=seed, temperature=temperature)
    real = binarize(real_images, "sample", seed) if mode == "ancestral" else real_images
    return SampleQuality(mode, per_class, class_consistency(net, images, classes),
                         mean_pairwise_distance(images, classes), mean_pairwise_distance(real, real_labels))
