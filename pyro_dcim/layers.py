"""Tied linear maps ``W^k``: one weight tensor serves ``W x`` and its adjoint ``Wᵀ y``.

Every layer takes inputs shaped ``(*batch, *in_shape)`` and returns
``(*batch, *out_shape)``; any number of leading batch dimensions is allowed, so
the same layers run under Pyro's vectorised particle plates.  ``forward`` adds
the layer's own bias ``b^k`` (eq. 6: ``a^k = W^k x^{k-1} + b^k``); ``adjoint``
applies ``W^kᵀ`` alone, since the reverse pass adds the bias of the layer below
(eq. 17-18).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ConvSpec, DenseSpec, LayerSpec

__all__ = ["TiedDense", "TiedConv2d", "make_layer"]


class TiedDense(nn.Module):
    """Dense ``W^k``, flattening its input (so it may follow a convolution).

    Holds an ``nn.Linear`` (PyTorch's initialisation) whose bias is ``b^k``.
    Shapes: ``forward`` ``(*B, *in_shape) -> (*B, units)``, ``adjoint`` back.
    """

    def __init__(self, in_shape: tuple[int, ...], units: int) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = (units,)
        self.linear = nn.Linear(int(torch.Size(in_shape).numel()), units)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.in_shape) > 1:
            x = x.flatten(-len(self.in_shape))
        return self.linear(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y @ self.linear.weight
        if len(self.in_shape) > 1:
            out = out.unflatten(-1, self.in_shape)
        return out


class TiedConv2d(nn.Module):
    """Convolutional ``W^k``; its adjoint is ``conv_transpose2d`` with the same weight.

    The transpose gets the ``output_padding`` that lands exactly on ``in_shape``,
    so ``<W x, y> = <x, Wᵀ y>`` holds even where the forward convolution drops
    the last rows or columns.  Shapes: ``(*B, C, H, W) <-> (*B, K, H', W')``.
    """

    def __init__(self, in_shape: tuple[int, int, int], spec: ConvSpec, out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.conv = nn.Conv2d(in_shape[0], spec.kernels, spec.window, stride=spec.stride, padding=spec.padding)
        self.stride, self.padding = spec.stride, spec.padding
        self.output_padding = tuple(
            size - ((o - 1) * spec.stride - 2 * spec.padding + spec.window)
            for size, o in zip(in_shape[1:], out_shape[1:])
        )

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor:
        """``b^k``, one per kernel, shaped ``(K, 1, 1)`` to broadcast over the layer's state."""
        return self.conv.bias[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        out = self.conv(x.reshape(-1, *self.in_shape))
        return out.reshape(*batch, *self.out_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        batch = y.shape[:-3]
        out = F.conv_transpose2d(y.reshape(-1, *self.out_shape), self.conv.weight, stride=self.stride,
                                 padding=self.padding, output_padding=self.output_padding)
        return out.reshape(*batch, *self.in_shape)


def make_layer(spec: LayerSpec, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    if isinstance(spec, ConvSpec):
        return TiedConv2d(in_shape, spec, out_shape)  # type: ignore[arg-type]
    assert isinstance(spec, DenseSpec)
    return TiedDense(in_shape, spec.units)
