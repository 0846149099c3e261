"""Argument checks for the public API, with messages that say what to fix.

Shape checks are always on (they cost nothing).  Value checks (pixels in [0, 1],
no NaN, labels in range) read the data, which synchronises a GPU, so they follow
Pyro's switch: on by default, off inside ``pyro.validation_enabled(False)``, which
the training loop uses for its hot path after checking the dataset once.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from pyro.infer.util import is_validation_enabled

__all__ = ["check_images", "check_labels", "check_state", "as_labels", "check_direction", "check_binary",
           "check_class_batch", "check_partial_labels", "DIRECTIONS", "UNLABELLED"]

#: The two chains of the DCIM: forward (eq. 13) and reverse (eq. 17-18).
DIRECTIONS = ("forward", "reverse")
#: The label of an image whose class is not observed (``fit --labels N``, :mod:`pyro_dcim.semi_supervised`).
UNLABELLED = -1


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    return direction


def check_images(x0: torch.Tensor, input_shape: Sequence[int], name: str = "x0",
                 dtype: Optional[torch.dtype] = None) -> None:
    """``x0`` must be ``(*batch, *input_shape)`` floats (of ``dtype``, the network's) with values in [0, 1]."""
    shape = tuple(input_shape)
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x0).__name__}")
    if tuple(x0.shape[x0.dim() - len(shape):]) != shape or x0.dim() < len(shape):
        raise ValueError(f"{name} has shape {tuple(x0.shape)}, but the network takes (batch, *{shape}); "
                         "reshape the images or build the DCIM with a matching input_shape")
    if not x0.is_floating_point():
        raise TypeError(f"{name} must be floating point intensities in [0, 1], got {x0.dtype}; "
                        "divide uint8 images by 255")
    if dtype is not None and x0.dtype != dtype:
        raise TypeError(f"{name} is {x0.dtype} but the network's parameters are {dtype}; pass {name}.to({dtype}) "
                        "(or convert the network, e.g. net.double())")
    if is_validation_enabled() and x0.numel():
        if torch.isnan(x0).any():
            raise ValueError(f"{name} contains NaN")
        lo, hi = float(x0.min()), float(x0.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; images must be intensities in [0, 1] "
                             "(read as p(pixel = 1)); rescale them, e.g. x / 255")


def as_labels(y: Any, device: torch.device) -> torch.Tensor:
    """Class indices given as an int, a list or an array, as a tensor on ``device``; a tensor as it is."""
    if isinstance(y, torch.Tensor):
        return y
    try:
        return torch.as_tensor(y, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"classes must be a tensor, an int or a list of ints, got {type(y).__name__}") from None


def check_labels(y: torch.Tensor, num_classes: int, name: str = "y") -> None:
    """``y`` must hold class indices ``0 .. num_classes - 1``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}; "
                        f"pass torch.tensor({name})")
    if y.is_floating_point():
        raise TypeError(f"{name} must be integer class indices, got {y.dtype}")
    if y.dim() >= 2 and y.shape[-1] == num_classes and is_validation_enabled() and y.numel() \
            and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(-1) == 1).all()):
        raise ValueError(f"{name} of shape {tuple(y.shape)} holds one-hot rows; pass class indices "
                         f"{name}.argmax(-1) (the reverse pass also takes class probabilities, {name}.float())")
    if is_validation_enabled() and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} has class labels in [{lo}, {hi}], but the network has {num_classes} "
                             f"classes (0..{num_classes - 1})")


def check_state(h: torch.Tensor, shape: Sequence[int], layer: int) -> None:
    """A state of hidden layer ``layer`` must end in that layer's shape."""
    shape = tuple(shape)
    if h.dim() < len(shape) or tuple(h.shape[h.dim() - len(shape):]) != shape:
        raise ValueError(f"a state of layer {layer} must be shaped (batch, *{shape}), got {tuple(h.shape)}")


def check_binary(x0: torch.Tensor, what: str, name: str = "x0") -> None:
    """``x0`` must hold bits 0/1: the model's ``x^0`` is binary, intensities are a distribution over images."""
    if x0.numel() and bool(((x0 != 0) & (x0 != 1)).any()):
        raise ValueError(f"{what} needs binary images, but {name} has values strictly between 0 and 1; binarise them "
                         f"first: pyro_dcim.data.binarize({name}, 'sample') (x ~ Bernoulli(intensity)) or "
                         f"binarize({name}, 'threshold') (x > 0.5)")


def check_class_batch(y: torch.Tensor, x0: torch.Tensor, input_shape: Sequence[int], name: str = "y") -> None:
    """Class indices ``y`` must be one per image of ``x0``: shaped ``(batch,)`` where ``x0`` is
    ``(batch, *input_shape)``.  Shapes only, so it costs nothing."""
    shape = tuple(input_shape)
    if x0.dim() < len(shape) or tuple(x0.shape[x0.dim() - len(shape):]) != shape:
        return   # check_images says what is wrong with the images
    batch = tuple(x0.shape[:x0.dim() - len(shape)])
    if len(batch) != 1:
        raise ValueError(f"x0 must be one batch of images (batch, *{tuple(input_shape)}), got {tuple(x0.shape)}")
    if not y.is_floating_point() and y.dim() != 1:
        squeeze = f"; pass {name}.reshape(-1)" if y.numel() == batch[0] else ""
        raise ValueError(f"{name} must be class indices shaped (batch,), got {tuple(y.shape)}{squeeze}")
    if y.shape[0] != batch[0]:
        raise ValueError(f"x0 holds {batch[0]} images but {name} holds {y.shape[0]} classes; give one class per image")


def check_partial_labels(y: torch.Tensor, num_classes: int, batch: int) -> None:
    """``y``: one class index or :data:`UNLABELLED` per image (shapes always; values when Pyro validates)."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.shape != (batch,):
        raise ValueError(f"y must hold one integer class index or {UNLABELLED} (unlabelled) per image, shape "
                         f"({batch},), got {getattr(y, 'shape', type(y).__name__)}")
    if is_validation_enabled() and y.numel() and (int(y.min()) < UNLABELLED or int(y.max()) >= num_classes):
        raise ValueError(f"y must hold classes 0..{num_classes - 1} or {UNLABELLED} (unlabelled), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
