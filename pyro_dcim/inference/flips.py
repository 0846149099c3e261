"""Pre-activations of many binary states that differ from one reference state in few units.

The particles of one image, drawn from a trained forward chain, mostly agree: of 512 units of a
layer, about 25 differ from the most probable state (the full-MNIST ``generative`` run).  So a
dense layer's ``W x_p`` is computed as ``W r + Σ_{i: x_p,i ≠ r_i} ±W[:, i]``: the reference's product
once per image, and per particle only the columns of its flipped units, summed by
``F.embedding_bag`` (a gather-and-add over the rows of ``Wᵀ``).  Exact up to float rounding; used
where the flips are few enough to pay (:data:`MAX_FLIP_SHARE`), else the dense product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from ..layers import TiedDense

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["Flips", "flips", "preactivation_from_reference", "MAX_FLIP_SHARE"]

#: Above this share of flipped units a dense matrix product is faster than gathering columns.
MAX_FLIP_SHARE = 0.15


class Flips:
    """Where the states ``bits`` ``(particles, batch, *shape)`` differ from ``reference`` ``(batch, *shape)``:
    flat unit ``index``, ``sign`` (+1 where the particle's bit is 1), ``offsets`` of each
    ``(particle, image)`` row into them, and the ``share`` of units flipped."""

    def __init__(self, bits: torch.Tensor, reference: torch.Tensor, state_step: float) -> None:
        rows = bits.shape[0] * bits.shape[1]
        diff = (bits - reference).reshape(rows, -1)
        row, self.index = diff.nonzero(as_tuple=True)
        self.sign = diff[row, self.index] * state_step        # the change of the unit's state, ±1 or ±2
        counts = torch.bincount(row, minlength=rows)
        self.offsets = torch.cumsum(counts, 0) - counts
        self.share = float(len(self.index)) / max(diff.numel(), 1)
        self.rows = rows


def flips(bits: torch.Tensor, reference: torch.Tensor, net: "DCIM") -> Flips:
    step = float(net.units.state(torch.ones(())) - net.units.state(torch.zeros(())))
    return Flips(bits, reference, step)


def _table(layer: torch.nn.Module, direction: str) -> Optional[torch.Tensor]:
    """Rows = the parent's (flat) units of the dense map from parent to child, or None (not a dense layer)."""
    if not isinstance(layer, TiedDense):
        return None
    return layer.weight.t() if direction == "forward" else layer.adjoint_weight


def preactivation_from_reference(net: "DCIM", k: int, direction: str, reference_state: torch.Tensor,
                                 state: torch.Tensor, change: Optional[Flips]) -> torch.Tensor:
    """:meth:`DCIM.preactivation` ``(k, state, direction)`` for ``state`` ``(particles, batch, *shape)``
    whose units differ from ``reference_state`` ``(batch, *shape)`` as ``change`` says."""
    table = _table(net.parent_layer(k, direction), direction)
    if change is None or table is None or change.share > MAX_FLIP_SHARE:
        return net.preactivation(k, state, direction)
    base = net.preactivation(k, reference_state, direction)                       # (batch, out)
    added = F.embedding_bag(change.index, table.contiguous(), change.offsets, mode="sum",
                            per_sample_weights=change.sign.to(table.dtype))       # (rows, out)
    child = base.shape[1:]                                   # the child's shape (an image: (1, 28, 28))
    return base + added.view(state.shape[0], state.shape[1], *child)
