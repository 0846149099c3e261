"""Which units of a hidden layer a Gibbs sampler may update at once, and how they touch their children.

Given the rest, ``p(x^k | ·) ∝ p(x^k | parent) p(child | x^k)``: the first factor is
independent over units, the second couples every two units that share a child
(explaining away).  A *colour* is a set of units with pairwise disjoint child
footprints, so its units are conditionally independent and are resampled together:

* a dense map to the child (or the class) couples all units: one unit per colour;
* a convolution couples only units within a window of each other: colour ``(c, h mod p,
  w mod p)`` with period ``p`` = the window when ``x^k`` is the convolution's input
  (forward chain), ``ceil(window / stride)`` when ``x^k`` is its output (reverse chain).

For each colour, :class:`Colour` lists the children it touches, the unit that owns each
of them, and the change of that child's pre-activation when its owner's bit goes from
0 to 1 (one column of ``W``), so an update costs a gather and a scatter, not a
matrix product.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..chain import Chain
from ..layers import TiedConv2d

__all__ = ["Colour", "LayerBlanket"]

# Colour plans of a layer are kept when they hold at most this many child entries.
_CACHE_ENTRIES = 1 << 23


class Colour(NamedTuple):
    """Units updated together and their children (flat indices within each layer).

    ``children``/``owner`` are ``None`` for a single unit coupled to every child.
    ``delta``: child pre-activation change per unit flip 0→1, ``(len(children),)`` or ``(m_child,)``.
    """

    units: torch.Tensor
    children: Optional[torch.Tensor]
    owner: Optional[torch.Tensor]
    delta: torch.Tensor


class LayerBlanket:
    """The colouring of hidden layer ``k`` for a chain direction (built from the current weights)."""

    def __init__(self, chain: Chain, k: int) -> None:
        self.chain, self.k = chain, k
        self.shape = tuple(chain.net.shapes[k])
        self.layer = chain.child_layer(k)
        like = chain.net.input_bias
        one, zero = like.new_ones(()), like.new_zeros(())
        self.step = chain.units.state(one) - chain.units.state(zero)   # 1 for {0,1}, 2 for {-1,+1}
        self.is_conv = isinstance(self.layer, TiedConv2d) and len(self.shape) == 3
        self._cache: Optional[list[Colour]] = None

    @property
    def period(self) -> int:
        """The smallest lattice spacing at which no two units share a child."""
        window, stride = self.layer.weight.shape[-1], self.layer.stride
        return window if self.chain.forward else math.ceil(window / stride)

    def colours(self, period: Optional[int] = None) -> list[Colour]:
        """The colours in a fixed order; ``period`` (convolutions) a lattice spacing at least
        :attr:`period`, so that colourings of two child maps of the layer can coincide."""
        if self._cache is not None and period is None:
            return self._cache
        if not self.is_conv:
            plans = self._dense_colours()
        else:
            p = self.period if period is None else period
            if p < self.period:
                raise ValueError(f"period {p} is below the layer's conflict-free period {self.period}")
            plans = [self._conv_colour(*cab, p) for cab in self._conv_keys(p)]
        if period is None and sum(p.delta.numel() for p in plans) <= _CACHE_ENTRIES:
            self._cache = plans
        return plans

    # -- dense: one unit per colour, its column of W ------------------------------------------
    def _dense_colours(self) -> list[Colour]:
        # unit i's column of the child map: W^{k+1}[:, i] forward, row i of W^k reverse (W^kᵀ e_i)
        weight = self.chain.child_weight(self.k).detach()
        # contiguous rows: a strided column would keep every proposal's addcmul off the vectorised path
        cols = ((weight.T if self.chain.forward else weight) * self.step).contiguous()
        m = cols.shape[0]
        idx = torch.arange(m, device=cols.device)
        return [Colour(idx[i:i + 1], None, None, cols[i]) for i in range(m)]

    # -- convolution: a lattice of positions per channel --------------------------------------
    def _conv_keys(self, p: int) -> list[tuple[int, int, int]]:
        c, h, w = self.shape
        return [(ci, a, b) for ci in range(c) for a in range(min(p, h)) for b in range(min(p, w))]

    def _footprint(self, v: torch.Tensor) -> torch.Tensor:
        """Sum of ``v`` over each child's window: the child map with a kernel of ones."""
        layer = self.layer
        ones = torch.ones_like(layer.weight, dtype=v.dtype)
        if self.chain.forward:
            return F.conv2d(v, ones, stride=layer.stride, padding=layer.padding)
        return F.conv_transpose2d(v, ones, stride=layer.stride, padding=layer.padding,
                                  output_padding=layer.output_padding)

    def _conv_colour(self, ci: int, a: int, b: int, p: int) -> Colour:
        net = self.chain.net
        device = net.input_bias.device
        # float64 so that unit indices survive the convolution exactly
        mask = torch.zeros(self.shape, dtype=torch.float64, device=device)
        mask[ci, a::p, b::p] = 1
        units = mask.flatten().nonzero().squeeze(1)
        count = self._footprint(mask[None]).flatten()
        if count.max() > 1.5:
            raise AssertionError(f"colouring of layer x{self.k} is not conflict-free (period {p})")
        index = torch.arange(1, mask.numel() + 1, dtype=torch.float64, device=device).reshape(self.shape)
        owner_flat = self._footprint((mask * index)[None]).flatten()
        children = (count > 0.5).nonzero().squeeze(1)
        owner = torch.searchsorted(units, owner_flat[children].round().long() - 1)
        delta = self.chain.child_linear(self.k, mask.to(net.input_bias.dtype) * self.step).flatten()[children]
        return Colour(units, children, owner, delta)
