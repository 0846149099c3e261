"""The Gibbs update of a convolutional layer as strided views and gathers.

A colour of a conv layer ``x^k`` (:mod:`.blanket`) is one channel's lattice ``(ci, a::P, b::P)``:
no two of its units share a child, so every child position has at most one owner in the colour.
The colour's units are a strided view of the layer; the sign of each unit's proposed flip spreads
to its children by one gather over child positions (the owner map, computed once per offset
``(a, b)`` with a convolution of ones), shared by all child channels, and each unit's sum over its
children comes back by the matching scatter-add.  Children outside the colour's footprint get a
zero spread, so they neither count nor move.  Per child position the sums over channels of
``|L|`` and of ``log σ(|L|)`` are kept, so a proposal costs one ``σ`` per child and no logarithm
but one per product (:mod:`.logistic`).  The conditionals are the same (see :mod:`.energy`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .blanket import LayerBlanket
from .logistic import log_sigmoid_abs_sum, log_sigmoid_sum_


class LatticeTerm:
    """A weighted Bernoulli child term of a conv layer: child logits ``(N, K, H', W')`` and, per
    child position, ``Σ_K |L|`` and ``Σ_K log σ(|L|)``."""

    def __init__(self, blanket: LayerBlanket, weight: float, logits: torch.Tensor,
                 deltas: dict[tuple[int, int, int], torch.Tensor], owners: dict[tuple[int, int], torch.Tensor]) -> None:
        self.blanket, self.weight = blanket, weight
        chain = blanket.chain
        self.child_shape = tuple(chain.net.shapes[chain.child(blanket.k)])
        n = logits.numel() // int(torch.Size(self.child_shape).numel())
        self.logits = logits.reshape(n, *self.child_shape).contiguous()
        self.buffer = torch.empty_like(self.logits)
        self.abs_sum = self.logits.abs().sum(1)
        self.log_sig = log_sigmoid_abs_sum(self.logits, 1)
        self.deltas, self._owners = deltas, owners     # both kept by the caller across sweeps

    def owner(self, a: int, b: int, lattice: torch.Size, period: int) -> torch.Tensor:
        """Per child position (flat), the index of its owner among the colour's units (flat over
        the ``(a::P, b::P)`` lattice), or the lattice size where it has none."""
        if (a, b) not in self._owners:
            h, w = self.blanket.shape[-2:]
            index = torch.zeros(1, 1, h, w, dtype=torch.float64, device=self.logits.device)
            index[0, 0, a::period, b::period] = torch.arange(1, lattice.numel() + 1, dtype=torch.float64,
                                                             device=index.device).reshape(lattice)
            layer = self.blanket.layer
            ones = torch.ones(1, 1, *layer.weight.shape[-2:], dtype=torch.float64, device=index.device)
            if self.blanket.chain.forward:
                spread = F.conv2d(index, ones, stride=layer.stride, padding=layer.padding)
            else:
                spread = F.conv_transpose2d(index, ones, stride=layer.stride, padding=layer.padding,
                                            output_padding=layer.output_padding)
            owner = spread.flatten().round().long() - 1     # one owner at most: the sum is its index
            self._owners[(a, b)] = torch.where(owner < 0, lattice.numel(), owner)
        return self._owners[(a, b)]

    def spread(self, v: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` over the colour's units → ``(N, 1, H', W')``: each child's owner's value, 0 if none."""
        padded = torch.cat([v, v.new_zeros(v.shape[0], 1)], 1)
        return padded.index_select(1, owner).view(v.shape[0], 1, *self.child_shape[-2:])

    @staticmethod
    def collect(d: torch.Tensor, owner: torch.Tensor, units: int) -> torch.Tensor:
        """The adjoint of :meth:`spread`: ``(N, H'·W')`` → each unit's sum over its children ``(N, L)``."""
        return d.new_zeros(d.shape[0], units + 1).index_add_(1, owner, d)[:, :units]


def lattice_deltas(blanket: LayerBlanket, period: int) -> dict[tuple[int, int, int], torch.Tensor]:
    """Per colour ``(ci, a, b)``: the change of every child's bit logit when all of the colour's units
    turn on, shaped like the child (zero outside the colour's footprint)."""
    chain = blanket.chain
    like = chain.net.input_bias
    child_shape = tuple(chain.net.shapes[chain.child(blanket.k)])
    scale = float(chain.units.bit_logits(like.new_ones(())))
    out = {}
    for key, col in zip(blanket._conv_keys(period), blanket.colours(period)):
        full = like.new_zeros(int(torch.Size(child_shape).numel()))
        full[col.children] = col.delta * scale
        out[key] = full.reshape(child_shape)
    return out


def lattice_update(x: torch.Tensor, own: torch.Tensor, shape: tuple[int, int, int], terms: list[LatticeTerm],
                   period: int, probs: Optional[torch.Tensor]) -> None:
    """Gibbs update of conv layer ``x`` ``(chains, batch, m)`` in place, colour by colour.

    ``own``: the units' logits from their parents and the ``t ΔL`` parts, ``(chains, batch, m)``.
    """
    c, h, w = shape
    n = x.shape[:-1].numel()
    xv, ownv = x.view(n, c, h, w), own.view(n, c, h, w)
    pv = None if probs is None else probs.view(n, c, h, w)
    for ci, a, b in terms[0].blanket._conv_keys(period):
        at = (slice(None), ci, slice(a, None, period), slice(b, None, period))
        xs = xv[at]
        lattice = xs.shape[1:]
        sign = (1 - 2 * xs).reshape(n, -1)
        field = ownv[at].reshape(n, -1).clone()
        proposals = []
        for t in terms:
            owner = t.owner(a, b, lattice, period)
            delta = t.deltas[(ci, a, b)]
            so = t.spread(sign, owner)
            # |alt| in a buffer kept across colours: fresh megabyte tensors would page-fault
            ab = torch.addcmul(t.logits, so, delta, out=t.buffer).abs_()
            abs_sum = ab.sum(1)
            log_sig = log_sigmoid_sum_(ab, 1)
            # Σ_K softplus(alt) − softplus(L) = (so Σ_K ΔL + Σ|alt| − Σ|L|) / 2 − Σ log σ(|alt|) + Σ log σ(|L|)
            d = 0.5 * (so[:, 0] * delta.sum(0) + abs_sum - t.abs_sum) - (log_sig - t.log_sig)
            field -= t.weight * sign * t.collect(d.flatten(1), owner, lattice.numel())
            proposals.append((owner, abs_sum, log_sig))
        p = torch.sigmoid(field)
        new = (torch.rand_like(p) < p).to(x.dtype)
        flip = new != xs.reshape(n, -1)
        for t, (owner, abs_sum, log_sig) in zip(terms, proposals):
            # L + (flip · sign) ΔL is the proposal's L + sign ΔL bit for bit where the unit flipped
            t.logits.addcmul_(t.spread(flip * sign, owner), t.deltas[(ci, a, b)])
            moved = t.spread(flip.to(x.dtype), owner)[:, 0] > 0.5
            t.abs_sum = torch.where(moved, abs_sum, t.abs_sum)
            t.log_sig = torch.where(moved, log_sig, t.log_sig)
        xv[at] = new.view(n, *lattice)
        if pv is not None:
            pv[at] = p.view(n, *lattice)
