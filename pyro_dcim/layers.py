"""Tied linear maps ``W^k``: one weight tensor serves ``W x`` and its adjoint ``Wᵀ y``.

Every layer takes inputs shaped ``(*batch, *in_shape)`` and returns
``(*batch, *out_shape)``; any number of leading batch dimensions is allowed, so
the same layers run under Pyro's vectorised particle plates.  ``forward`` adds
the layer's own bias ``b^k`` (eq. 6: ``a^k = W^k x^{k-1} + b^k``); ``adjoint``
applies ``W^kᵀ`` alone, since the reverse pass adds the bias of the layer below
(eq. 17-18).

:meth:`untie` gives a layer its own reverse weights (the ``--untie`` ablation): ``adjoint``
then applies the reverse copy, every reverse conditional follows, and the forward map keeps
``weight``.  Tied (the default) there is no copy and nothing changes.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ConvSpec, DenseSpec, LayerSpec

__all__ = ["TiedDense", "TiedConv2d", "make_layer"]


class _Untieable(nn.Module):
    """``reverse_weight``: ``None`` while tied (``adjoint`` uses ``weight``), else the reverse chain's own copy."""

    reverse_weight: Optional[nn.Parameter]

    @property
    def tied(self) -> bool:
        return self.reverse_weight is None

    @property
    def adjoint_weight(self) -> torch.Tensor:
        """The weight of the reverse map ``adjoint``: ``weight`` tied, the reverse copy untied."""
        return self.weight if self.reverse_weight is None else self.reverse_weight

    def untie(self) -> None:
        """Give the reverse map its own weights, initialised equal to the forward ones."""
        if self.reverse_weight is None:
            self.reverse_weight = nn.Parameter(self.weight.detach().clone())

    @torch.no_grad()
    def sync_reverse_weight(self) -> None:
        """Copy the forward weights into the reverse copy in place (after an initialisation)."""
        if self.reverse_weight is not None:
            self.reverse_weight.copy_(self.weight)


class TiedDense(_Untieable):
    """Dense ``W^k``, flattening its input (so it may follow a convolution).

    Owns ``weight`` ``(units, fan_in)`` and ``bias`` ``b^k`` ``(units,)``, initialised as
    ``nn.Linear`` is.  Shapes: ``forward`` ``(*B, *in_shape) -> (*B, units)``, ``adjoint`` back.
    """

    def __init__(self, in_shape: tuple[int, ...], units: int) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = (units,)
        self.weight = nn.Parameter(torch.empty(units, int(torch.Size(in_shape).numel())))
        self.bias = nn.Parameter(torch.empty(units))
        self.reverse_weight = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of ``nn.Linear`` (the same draws, in the same order)."""
        _reset_like_pytorch(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.in_shape) > 1:
            x = x.flatten(-len(self.in_shape))
        return F.linear(x, self.weight, self.bias)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._transpose(y, self.adjoint_weight)

    def weight_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """``Wᵀ y`` with the forward weight (:meth:`adjoint` when tied)."""
        return self._transpose(y, self.weight)

    def _transpose(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = y @ weight
        if len(self.in_shape) > 1:
            out = out.unflatten(-1, self.in_shape)
        return out

    def adjoint_transpose(self, x: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`adjoint` (the reverse weight applied forward, no bias)."""
        if len(self.in_shape) > 1:
            x = x.flatten(-len(self.in_shape))
        return F.linear(x, self.adjoint_weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _rename_legacy(state_dict, prefix, "linear")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TiedConv2d(_Untieable):
    """Convolutional ``W^k``; its adjoint is ``conv_transpose2d`` with the same weight.

    Owns ``weight`` ``(K, C, window, window)`` and ``bias`` ``b^k``, one per kernel, shaped
    ``(K, 1, 1)`` to broadcast over the layer's state; initialised as ``nn.Conv2d`` is.
    The transpose gets the ``output_padding`` that lands exactly on ``in_shape``,
    so ``<W x, y> = <x, Wᵀ y>`` holds even where the forward convolution drops
    the last rows or columns.  Shapes: ``(*B, C, H, W) <-> (*B, K, H', W')``.
    """

    def __init__(self, in_shape: tuple[int, int, int], spec: ConvSpec, out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.weight = nn.Parameter(torch.empty(spec.kernels, in_shape[0], spec.window, spec.window))
        self.bias = nn.Parameter(torch.empty(spec.kernels, 1, 1))
        self.reverse_weight = None
        self.stride, self.padding = spec.stride, spec.padding
        self.output_padding = tuple(
            size - ((o - 1) * spec.stride - 2 * spec.padding + spec.window)
            for size, o in zip(in_shape[1:], out_shape[1:])
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of ``nn.Conv2d`` (the same draws, in the same order)."""
        _reset_like_pytorch(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        out = F.conv2d(x.reshape(-1, *self.in_shape), self.weight, self.bias.view(-1), stride=self.stride,
                       padding=self.padding)
        return out.reshape(*batch, *self.out_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._transpose(y, self.adjoint_weight)

    def weight_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """``Wᵀ y`` with the forward weight (:meth:`adjoint` when tied)."""
        return self._transpose(y, self.weight)

    def _transpose(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch = y.shape[:-3]
        out = F.conv_transpose2d(y.reshape(-1, *self.out_shape), weight, stride=self.stride,
                                 padding=self.padding, output_padding=self.output_padding)
        return out.reshape(*batch, *self.in_shape)

    def adjoint_transpose(self, x: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`adjoint` (the reverse weight applied forward, no bias)."""
        batch = x.shape[:-3]
        out = F.conv2d(x.reshape(-1, *self.in_shape), self.adjoint_weight, stride=self.stride, padding=self.padding)
        return out.reshape(*batch, *self.out_shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _rename_legacy(state_dict, prefix, "conv")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _reset_like_pytorch(weight: nn.Parameter, bias: nn.Parameter) -> None:
    # nn.Linear's and nn.Conv2d's reset_parameters: Kaiming-uniform weights, biases U(±1/sqrt(fan_in))
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    fan_in = weight[0].numel()
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)


def _rename_legacy(state_dict: dict, prefix: str, inner: str) -> None:
    """Checkpoints from before the layers owned their parameters name them ``{inner}.weight`` and
    ``{inner}.bias`` (a conv bias ``(K,)``); read them as this layer's."""
    for name in ("weight", "bias"):
        old = state_dict.pop(f"{prefix}{inner}.{name}", None)
        if old is not None:
            state_dict[f"{prefix}{name}"] = old.reshape(-1, 1, 1) if inner == "conv" and name == "bias" else old


def make_layer(spec: LayerSpec, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    if isinstance(spec, ConvSpec):
        return TiedConv2d(in_shape, spec, out_shape)  # type: ignore[arg-type]
    assert isinstance(spec, DenseSpec)
    return TiedDense(in_shape, spec.units)
