"""The Gibbs update of a convolutional layer as strided views and small convolutions.

A colour of a conv layer ``x^k`` (:mod:`.blanket`) is one channel's lattice ``(ci, a::P, b::P)``:
no two of its units share a child.  So the sign of each unit's proposed flip spreads to its
children by a convolution with a one-channel kernel of ones (the child map's footprint), and each
unit's sum over its children comes back by the adjoint convolution; the colour's units are a
strided view of the layer.  This replaces the index gathers and scatters of
:class:`~pyro_dcim.inference.energy.ChainEnergy`'s general path, which dominated a sweep of the
paper's CNN; children outside the colour's footprint get a zero spread, so they neither count
nor move.  The conditionals are the same (see :mod:`.energy`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .blanket import LayerBlanket


class LatticeTerm:
    """A weighted Bernoulli child term of a conv layer: child logits ``(N, K, H', W')`` and their softplus."""

    def __init__(self, blanket: LayerBlanket, weight: float, logits: torch.Tensor,
                 deltas: dict[tuple[int, int, int], torch.Tensor], softplus) -> None:
        self.blanket, self.weight, self.softplus_fn = blanket, weight, softplus
        chain = blanket.chain
        self.child_shape = tuple(chain.net.shapes[chain.child(blanket.k)])
        n = logits.numel() // int(torch.Size(self.child_shape).numel())
        self.logits = logits.reshape(n, *self.child_shape)
        self.softplus = softplus(self.logits)
        layer = blanket.layer
        self.ones = torch.ones(1, 1, *layer.weight.shape[-2:], dtype=logits.dtype, device=logits.device)
        self.stride, self.padding, self.output_padding = layer.stride, layer.padding, layer.output_padding
        self.deltas = deltas

    def spread(self, v: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` on the layer → ``(N, 1, H', W')`` on the child: each child's owner's value."""
        if self.blanket.chain.forward:
            return F.conv2d(v, self.ones, stride=self.stride, padding=self.padding)
        return F.conv_transpose2d(v, self.ones, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding)

    def collect(self, d: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`spread`: each layer position's sum over its children."""
        if self.blanket.chain.forward:
            return F.conv_transpose2d(d, self.ones, stride=self.stride, padding=self.padding,
                                      output_padding=self.output_padding)
        return F.conv2d(d, self.ones, stride=self.stride, padding=self.padding)


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
    grid = x.new_zeros(n, 1, h, w)
    for ci, a, b in terms[0].blanket._conv_keys(period):
        at = (slice(None), ci, slice(a, None, period), slice(b, None, period))
        xs = xv[at]
        sign = 1 - 2 * xs
        field = ownv[at].clone()
        grid.zero_()
        grid[:, 0, a::period, b::period] = sign
        alts = []
        for t in terms:
            so = t.spread(grid)
            alt = torch.addcmul(t.logits, so, t.deltas[(ci, a, b)])
            spa = t.softplus_fn(alt)
            d = (spa - t.softplus).sum(1, keepdim=True)
            field -= t.weight * sign * t.collect(d)[:, 0, a::period, b::period]
            alts.append((alt, spa))
        p = torch.sigmoid(field)
        new = (torch.rand_like(p) < p).to(x.dtype)
        grid.zero_()
        grid[:, 0, a::period, b::period] = (new != xs).to(x.dtype)
        for t, (alt, spa) in zip(terms, alts):
            moved = t.spread(grid) > 0.5
            t.logits = torch.where(moved, alt, t.logits)
            t.softplus = torch.where(moved, spa, t.softplus)
        xv[at] = new
        if pv is not None:
            pv[at] = p
