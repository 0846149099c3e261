"""Generating images of a given class from the reverse model, and measuring them.

Three modes (Section 3 of the paper):

* ``"mean"``: the reverse mean field from the one-hot class down to the image,
  ``ν^{k-1} = mean(W^kᵀ ν^k + b^{k-1})`` (Fig. 2) — one "average digit" per class;
* ``"sample-layer"``: sample ``x^{n-1} ~ p(x^{n-1} | x^n = c)`` (exact: it is factorised,
  eq. 17) and propagate the probabilities down with approximation (2) (Fig. 3);
* ``"ancestral"``: the reverse Pyro model, every hidden layer and the image sampled
  (:func:`pyro_dcim.pyro_models.reverse_model`); binary images.

The first two return ``p(x^0 = 1)``, images with values in [0, 1].
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import torch

from .chain import Chain
from .model import DCIM
from .validation import as_labels

__all__ = ["MODES", "generate", "class_grid", "images_per_class", "predict", "class_consistency",
           "mean_pairwise_distance"]

MODES = ("mean", "sample-layer", "ancestral")
#: one temperature for every sampled layer, or ``{layer: T}``
Temperature = Union[float, Mapping[int, float]]


def images_per_class(mode: str, per_class: int) -> int:
    """How many images of each class a grid shows: the mean mode is deterministic, so one."""
    return 1 if mode == "mean" else per_class


def class_grid(num_classes: int, per_class: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class indices ``[0]*per_class + [1]*per_class + …``: the rows of a sample grid."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def _sample_down_to(net: DCIM, classes: torch.Tensor, layer: int, generator: Optional[torch.Generator],
                    temperature: Temperature = 1.0) -> torch.Tensor:
    """Sample ``x^{n-1}, …, x^{layer}`` ancestrally from the class (eq. 17); the state of ``x^{layer}``."""
    chain = Chain(net, "reverse")
    bits = chain.sample(chain.start_state(None, classes), 1, generator, upto=layer,
                        temperature=temperature)[layer][0]
    return net.units.state(bits.reshape(len(classes), *net.shapes[layer]))


@torch.no_grad()
def generate(net: DCIM, classes: torch.Tensor, mode: str = "mean", *, layer: Optional[int] = None,
             seed: int = 0, temperature: Temperature = 1.0) -> torch.Tensor:
    """Images ``(len(classes), *net.input_shape)`` of the given classes (a tensor or a list of ints;
    see the module doc).

    ``layer``: the sampled layer of ``"sample-layer"`` mode (default ``n-1``, as in the paper).
    ``seed`` makes the sampling modes repeatable.  ``temperature``: ``"sample-layer"`` draws its sampled
    layers from ``sigmoid(a / T)`` (``T > 1``: more varied codes, at some cost in class consistency;
    1, the default, is the model and the paper); ``{k: T}`` tempers only the layers it names, e.g.
    ``{n-1: 1.2}`` the code drawn from the class (docs/generative_training.md, writing styles).
    """
    device = net.input_bias.device
    classes = as_labels(classes, device).to(device)
    if temperature not in (1.0, {}) and mode != "sample-layer":
        raise ValueError(f"temperature applies to the sample-layer mode's sampled layers, not to {mode!r}")
    if mode == "mean":
        return torch.sigmoid(net.reverse_mean_field(classes).logits)
    if mode == "sample-layer":
        k = net.num_layers - 1 if layer is None else layer
        if not 1 <= k < net.num_layers:
            raise ValueError(f"sample-layer mode needs a hidden layer 1..{net.num_layers - 1}, got {k} "
                             f"(a net without hidden layers has only the mean mode)")
        generator = torch.Generator(device=device).manual_seed(seed)
        state = _sample_down_to(net, classes, k, generator, temperature)
        return torch.sigmoid(net.reverse_mean_field(state, layer=k).logits)
    if mode == "ancestral":
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the Pyro model draws from the global RNG
            torch.manual_seed(seed)
            return net.reverse_model(classes)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


@torch.no_grad()
def predict(net: DCIM, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward model's most probable class and its probability (eq. 15) for each image."""
    probs = torch.cat([torch.softmax(net(images[i:i + batch_size]), -1) for i in range(0, len(images), batch_size)])
    prob, pred = probs.max(-1)
    return pred, prob


def class_consistency(net: DCIM, images: torch.Tensor, classes: torch.Tensor) -> float:
    """Fraction of generated images that the forward model assigns to their intended class."""
    pred, _ = predict(net, images)
    return float((pred == classes.to(pred.device)).double().mean())


@torch.no_grad()
def mean_pairwise_distance(images: torch.Tensor, classes: torch.Tensor) -> float:
    """Diversity: the mean Euclidean distance between two images of the same class (pixel
    values in [0, 1]), averaged over the classes present.  0 for the mean mode."""
    flat = images.flatten(1).double()
    per_class = []
    for c in classes.unique():
        group = flat[classes.to(flat.device) == c]
        if len(group) < 2:
            continue
        d = torch.cdist(group, group)
        per_class.append(d.sum() / (len(group) * (len(group) - 1)))
    return float(torch.stack(per_class).mean()) if per_class else float("nan")
