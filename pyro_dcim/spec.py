"""The paper's layer notation, parsed and validated.

A spec lists the layers ``x^1 .. x^n`` above the input: a triplet
``(window, stride, kernels)`` is a convolution, an integer a dense layer, and
the last entry (an integer) is the number of classes.  The paper's CNN is::

    [(3, 1, 32), (3, 1, 32), (2, 2, 32), (3, 1, 64), (3, 1, 64), (2, 2, 64), 50, 10]

An optional fourth element sets a convolution's zero padding; by default a
stride-1 convolution keeps the image size (``padding = (window - 1) // 2``)
and a strided one has none.  Strings in the same notation are accepted too:
``"(3,1,32) (2,2,32) 50 10"``, ``"512-512-10"`` or ``"512,512,10"``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Sequence, Union

__all__ = ["SpecError", "ConvSpec", "DenseSpec", "LayerSpec", "parse_spec", "layer_shapes", "PAPER_SPECS"]


class SpecError(ValueError):
    """A spec, or an input shape, that does not describe a valid DCIM."""


@dataclass(frozen=True)
class ConvSpec:
    window: int
    stride: int
    kernels: int
    padding: int

    def as_notation(self) -> tuple:
        default = (self.window - 1) // 2 if self.stride == 1 else 0
        if self.padding == default:
            return (self.window, self.stride, self.kernels)
        return (self.window, self.stride, self.kernels, self.padding)


@dataclass(frozen=True)
class DenseSpec:
    units: int

    def as_notation(self) -> int:
        return self.units


LayerSpec = Union[ConvSpec, DenseSpec]
SpecLike = Union[str, Sequence[Union[int, Sequence[int]]]]

#: The paper's two networks (Section 3), by name.
PAPER_SPECS: dict[str, list] = {
    "dense": [512, 512, 10],
    "cnn": [(3, 1, 32), (3, 1, 32), (2, 2, 32), (3, 1, 64), (3, 1, 64), (2, 2, 64), 50, 10],
}


def _parse_string(text: str) -> list:
    text = text.strip()
    if text in PAPER_SPECS:
        return list(PAPER_SPECS[text])
    if "(" not in text and "[" not in text:
        parts = [p for p in re.split(r"[\s,\-x]+", text) if p]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise SpecError(f"cannot read spec {text!r}: expected integers like '512-512-10' "
                            "or triplets like '(3,1,32) (2,2,32) 50 10'") from None
    body = re.sub(r"\)\s*\(", "), (", text)
    body = re.sub(r"\)\s+(\d)", r"), \1", body)
    body = re.sub(r"(\d)\s+\(", r"\1, (", body)
    body = re.sub(r"(\d)\s+(?=\d)", r"\1, ", body)
    try:
        value = ast.literal_eval(body if body.startswith("[") else f"[{body}]")
    except (ValueError, SyntaxError):
        raise SpecError(f"cannot read spec {text!r}: write it as '(3,1,32) (2,2,32) 50 10'") from None
    return list(value)


def parse_spec(spec: SpecLike) -> list[LayerSpec]:
    """Turn the paper's notation into a list of layer specs, validating it.

    Raises :class:`SpecError` naming the offending entry when a convolution has a
    non-positive window, stride or kernel count, a dense layer has no units, a
    convolution follows a dense layer, or the last entry is not a class count >= 2.
    """
    entries = _parse_string(spec) if isinstance(spec, str) else list(spec)
    if not entries:
        raise SpecError("empty spec: give at least the number of classes, e.g. [512, 512, 10]")
    layers: list[LayerSpec] = []
    seen_dense = False
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, bool):
            raise SpecError(f"layer {i}: {entry!r} is not a layer")
        if isinstance(entry, int):
            if entry < 1:
                raise SpecError(f"layer {i}: a dense layer needs at least one unit, got {entry}")
            layers.append(DenseSpec(entry))
            seen_dense = True
            continue
        if not isinstance(entry, (tuple, list)) or len(entry) not in (3, 4) \
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
            raise SpecError(f"layer {i}: {entry!r} is neither a unit count nor a "
                            "(window, stride, kernels[, padding]) triplet of integers")
        window, stride, kernels = entry[:3]
        if window < 1 or stride < 1 or kernels < 1:
            raise SpecError(f"layer {i}: convolution {tuple(entry)} needs window, stride and kernels >= 1")
        padding = entry[3] if len(entry) == 4 else ((window - 1) // 2 if stride == 1 else 0)
        if padding < 0:
            raise SpecError(f"layer {i}: convolution {tuple(entry)} has negative padding")
        if seen_dense:
            raise SpecError(f"layer {i}: convolution {tuple(entry)} after a dense layer; "
                            "convolutions must come first")
        layers.append(ConvSpec(window, stride, kernels, padding))
    last = layers[-1]
    if not isinstance(last, DenseSpec) or last.units < 2:
        raise SpecError(f"the last layer is the class and must be an integer >= 2, got {entries[-1]!r}")
    return layers


def conv_output_size(size: int, window: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - window) // stride + 1


def layer_shapes(layers: Sequence[LayerSpec], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes of ``x^0 .. x^n`` (without the batch dimension).

    Convolutions need ``input_shape = (channels, height, width)``; dense layers
    flatten whatever comes before them.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise SpecError(f"input_shape must be positive sizes, got {tuple(input_shape)}")
    shapes = [shape]
    for i, layer in enumerate(layers, start=1):
        if isinstance(layer, ConvSpec):
            if len(shape) != 3:
                raise SpecError(f"layer {i}: a convolution needs an input shaped (channels, height, width), "
                                f"got {shape}; pass e.g. input_shape=(1, 28, 28)")
            h, w = (conv_output_size(s, layer.window, layer.stride, layer.padding) for s in shape[1:])
            # a window wider than its input sees mostly padding: the output exists but means nothing
            if h < 1 or w < 1 or layer.window > min(shape[1:]):
                raise SpecError(f"layer {i}: convolution {layer.as_notation()} does not fit its "
                                f"{shape[1]}x{shape[2]} input (its {layer.window}x{layer.window} window must fit "
                                f"in it; input_shape {tuple(input_shape)} is too small for this architecture)")
            shape = (layer.kernels, h, w)
        else:
            shape = (layer.units,)
        shapes.append(shape)
    return shapes
