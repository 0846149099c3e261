"""Weighted sums of the two chains' log-probabilities over the hidden layers, and the Gibbs sweep
that leaves them invariant: the one transition of the Gibbs kernel and of AIS.

With the image ``x^0`` and the class ``y`` clamped, a hidden state ``h = (x^1 … x^{n-1})`` has
four log-probability terms:

* ``"forward"``: ``Σ_k log p(x^k | x^{k-1})`` of the forward chain (eq. 13), ``x^0`` observed;
* ``"forward_end"``: ``log p(y | x^{n-1})``, the forward chain's class (eq. 15);
* ``"reverse"``: ``Σ_k log p(x^k | x^{k+1})`` of the reverse chain (eq. 17-18), ``x^n = y``;
* ``"reverse_end"``: ``log p(x^0 | x^1)``, the reverse chain's image.

:class:`ChainEnergy` scores ``log f(h) = Σ_term weight · term(h)`` and resamples every unit
from its conditional under ``f``.  Weights ``{"forward": 1, "forward_end": 1}`` give the
forward posterior ``p(h | x^0, y)``, ``{"reverse": 1, "reverse_end": 1}`` the reverse one;
AIS anneals ``{"reverse": 1, "reverse_end": β}`` (from the reverse prior) or
``{"forward": 1 − β, "reverse": β, "reverse_end": β}`` (from the forward chain).

The conditional log-odds of unit ``i`` of layer ``k`` is its own logit under each term where
``x^k`` is the child, plus, for each term where ``x^k`` is a parent with child ``c``,

    w · Σ_j [t_j ΔL_ji − softplus(L_j + (1 − x_i) ΔL_ji) + softplus(L_j − x_i ΔL_ji)],

``L`` the child's bit logits, ``t`` its bits and ``ΔL_ji`` the change of ``L_j`` when unit ``i``
turns on.  The ``t ΔL`` part does not depend on ``x^k``: it is one product per layer (the
transposed map applied to the child), folded into the own logits.  Only the softplus part is
paid per unit, against the current logits (one of the two softplus terms is the current one).
Units sharing no child under any weighted term are updated at once (:mod:`.blanket`); layers
of equal parity are independent given the others, so a sweep updates odd, then even layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Union

import torch

from ..chain import Chain
from .blanket import Colour, LayerBlanket
from .lattice import LatticeTerm, lattice_deltas, lattice_update
from .logistic import log_sigmoid_abs_sum, log_sigmoid_sum_, softplus

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["ChainEnergy", "TERMS", "posterior_weights"]

TERMS = ("forward", "forward_end", "reverse", "reverse_end")


def posterior_weights(direction: str) -> dict[str, float]:
    """The weights of the posterior ``p(h | x^0, y)`` of one chain."""
    return {direction: 1.0, f"{direction}_end": 1.0}


def _take(t: torch.Tensor, idx: Union[slice, torch.Tensor]) -> torch.Tensor:
    """``t[..., idx]``; ``index_select`` is several times faster than advanced indexing on CPU."""
    return t[..., idx] if isinstance(idx, slice) else t.index_select(-1, idx)


def _put(t: torch.Tensor, idx: Union[slice, torch.Tensor], value: torch.Tensor) -> None:
    """``t[..., idx] = value`` in place."""
    if isinstance(idx, slice):
        t[..., idx] = value
    else:
        t.index_copy_(-1, idx, value)


class _ChildTerm:
    """A weighted term in which the layer being updated is the parent: its child's current
    logits (Bernoulli bit logits, or the class pre-activations), and the part of
    ``Σ_j softplus(L_j)`` that needs a logarithm (per row for a dense map, per child otherwise).
    """

    def __init__(self, chain: Chain, weight: float, logits: torch.Tensor, target: torch.Tensor,
                 categorical: bool = False, dense: bool = True) -> None:
        self.chain, self.weight, self.logits, self.target = chain, weight, logits, target
        self.categorical, self.dense = categorical, dense
        self.scale = float(chain.units.bit_logits(logits.new_ones(())))
        self.log_part: Optional[torch.Tensor] = None
        if not categorical:
            # dense: per row, (..., 1); otherwise per child
            self.log_part = log_sigmoid_abs_sum(logits).unsqueeze(-1) if dense else softplus(logits)
        if dense and not categorical:
            self.abs_sum = logits.abs().sum(-1, keepdim=True)
        self._alt: Optional[torch.Tensor] = None
        self._alt_log: Optional[torch.Tensor] = None

    def propose(self, col: Colour, sign: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """This term's part of the log-odds of the colour's units, from flipping each unit."""
        so = sign if col.owner is None else _take(sign, col.owner)
        # a stride-1 convolution's colour touches every child once: no gather or scatter needed
        self._whole = col.children is None or col.children.numel() == self.logits.shape[-1]
        a = self.logits if self._whole else _take(self.logits, col.children)
        if self.categorical:    # the class couples every class logit: one total per unit
            self._alt = alt = a + so * col.delta
            k = self.chain.net.num_layers - 1
            d = self.chain.child_log_prob(k, alt, self.target) - self.chain.child_log_prob(k, a, self.target)
            return self.weight * sign * d.unsqueeze(-1)
        self._step = step = col.delta * self.scale if self.scale != 1 else col.delta
        self._sign = so
        if col.children is None:
            # softplus(x) = relu(x) − log σ(|x|) and relu(x) = (x + |x|) / 2, so
            # Σ softplus(alt) − Σ softplus(L) = (s Σ ΔL + Σ|alt| − Σ|L|) / 2 − log Π σ(|alt|) / Π σ(|L|):
            # |alt| is the only full-width pass besides σ and the product.  alt itself is not
            # kept: accept adds flip · sign · ΔL to L.
            ab = torch.addcmul(a, so, step).abs_()
            self._alt_abs = ab.sum(-1, keepdim=True)
            self._alt_log = log_sigmoid_sum_(ab).unsqueeze(-1)
            d = torch.addcmul(self._alt_abs - self.abs_sum, so, step.sum(-1, keepdim=True))
            d = d.mul_(0.5).sub_(self._alt_log).add_(self.log_part)
            return d.mul_(sign).mul_(-self.weight)
        self._alt = alt = torch.addcmul(a, so, step)
        self._alt_log = spa = softplus(alt)
        d = spa - (self.log_part if self._whole else _take(self.log_part, col.children))
        return -self.weight * sign * d.new_zeros(shape).index_add_(-1, col.owner, d)

    def accept(self, col: Colour, flip: torch.Tensor) -> None:
        """Moves the child's logits to the proposed ones where the unit flipped."""
        fo = flip if col.owner is None else _take(flip, col.owner)
        if col.children is None and not self.categorical:
            # L += flip · sign · ΔL: one fused pass, cheaper than selecting between L and alt
            self.logits.addcmul_(fo * self._sign, self._step)
            self.log_part = torch.where(fo, self._alt_log, self.log_part)
            self.abs_sum = torch.where(fo, self._alt_abs, self.abs_sum)
        elif self._whole:
            self.logits = torch.where(fo, self._alt, self.logits)
            if not self.categorical:
                self.log_part = torch.where(fo, self._alt_log, self.log_part)
        else:
            _put(self.logits, col.children, torch.where(fo, self._alt, _take(self.logits, col.children)))
            if not self.categorical:
                _put(self.log_part, col.children, torch.where(fo, self._alt_log, _take(self.log_part, col.children)))


class ChainEnergy:
    """``log f(h) = Σ weight · term(h)`` over the hidden layers of ``net`` given ``x0`` and ``y``.

    ``x0``: ``(batch, *input_shape)`` (bits, or intensities read as soft targets); ``y``:
    class indices ``(batch,)``.  States are ``{k: bits (chains, batch, m_k)}``, flat float 0/1.
    """

    def __init__(self, net: "DCIM", x0: torch.Tensor, y: torch.Tensor) -> None:
        self.net, self.x0, self.y = net, x0, y
        self.chains = {"forward": Chain(net, "forward"), "reverse": Chain(net, "reverse")}
        self.hidden = list(range(1, net.num_layers))
        self.n = net.num_layers
        units = net.units
        one, zero = net.input_bias.new_ones(()), net.input_bias.new_zeros(())
        self.step = float(units.state(one) - units.state(zero))     # 1 for {0,1}, 2 for ±1
        self.logit_scale = float(units.bit_logits(one))              # 1 for {0,1}, 2 for ±1
        self._plans: dict[tuple, list[tuple[Colour, ...]]] = {}

    # -- states ------------------------------------------------------------------------------
    def shaped(self, k: int, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*flat.shape[:-1], *self.net.shapes[k])

    def state(self, k: int, bits: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Layer ``k`` in the unit encoding, shaped; the clamped ends for ``k = 0`` and ``k = n``."""
        if k == 0:
            return self.net.units.state(self.x0)
        if k == self.n:
            return self.net.class_state(self.y)
        return self.net.units.state(self.shaped(k, bits[k]))

    def _target(self, k: int, bits: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Bits of layer ``k`` flat, the image flat, or the class indices."""
        if k == self.n:
            return self.y
        if k == 0:
            return self.x0.flatten(1)
        return bits[k]

    # -- scores ------------------------------------------------------------------------------
    def terms(self, bits: Mapping[int, torch.Tensor], names: tuple[str, ...] = TERMS) -> dict[str, torch.Tensor]:
        """The log-probability terms named, each ``(chains, batch)``."""
        out = {}
        for name in names:
            direction = name.split("_")[0]
            chain = self.chains[direction]
            if name.endswith("_end"):
                last = chain.order[-1]
                pre = chain.child_preactivation(last, self.state(last, bits))
                out[name] = chain.child_log_prob(last, pre, self._end_target(chain))
            else:
                total = 0.0
                for k in self.hidden:
                    logits = chain.logits(k, self.state(chain.parent(k), bits)).flatten(-len(self.net.shapes[k]))
                    total = total + (bits[k] * logits - softplus(logits)).sum(-1)
                out[name] = total
        return out

    def _end_target(self, chain: Chain) -> torch.Tensor:
        return self.y if chain.forward else self.x0

    def log_density(self, bits: Mapping[int, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
        """``log f(h)`` under ``weights`` (unnormalised), ``(chains, batch)``."""
        names = tuple(n for n in TERMS if weights.get(n, 0.0))
        terms = self.terms(bits, names)
        return sum(weights[n] * terms[n] for n in names)

    # -- the sweep ---------------------------------------------------------------------------
    @torch.no_grad()
    def sweep(self, bits: dict[int, torch.Tensor], weights: Mapping[str, float],
              probs: Optional[dict[int, torch.Tensor]] = None) -> None:
        """One Gibbs sweep in place: odd hidden layers, then even ones.  ``probs``, when given,
        receives each unit's conditional ``p(x^k_i = 1 | rest)`` (a Rao-Blackwellised draw)."""
        for parity in (1, 0):
            for k in self.hidden:
                if k % 2 == parity:
                    self._update_layer(k, bits, weights, None if probs is None else probs[k])

    def _child_terms(self, k: int, weights: Mapping[str, float]) -> list[tuple[Chain, float]]:
        out = []
        for direction, chain in self.chains.items():
            c = chain.child(k)
            end = c in (0, self.n)
            w = weights.get(f"{direction}_end" if end else direction, 0.0)
            if w:
                out.append((chain, w))
        return out

    def _own_logits(self, k: int, bits: Mapping[int, torch.Tensor], weights: Mapping[str, float],
                    lead: torch.Size) -> torch.Tensor:
        own = None
        event = len(self.net.shapes[k])
        for direction, chain in self.chains.items():
            w = weights.get(direction, 0.0)
            if w:
                logits = w * chain.logits(k, self.state(chain.parent(k), bits)).flatten(-event)
                own = logits if own is None else own + logits
        if own is None:
            own = bits[k].new_zeros(())
        return own.expand(*lead, -1).contiguous()      # a fresh tensor: updated in place below

    def colours(self, k: int, children: list[Chain]) -> list[tuple[tuple[Colour, ...], Union[slice, torch.Tensor]]]:
        """Colours of layer ``k`` valid for every child map in ``children``, one :class:`Colour`
        per map, each with its units as a slice where it is one unit (a view, not a copy):
        lattice colours of the largest period when every map is a convolution, single units
        otherwise (then every map lists its children for the same unit); every unit at once
        when ``x^k`` is nobody's parent."""
        key = (k, tuple(c.direction for c in children))
        if key not in self._plans:
            blankets = [LayerBlanket(c, k) for c in children]
            if not blankets:
                plan = [(self._all_units(k),)]
            elif len(blankets) == 1:
                plan = [(col,) for col in blankets[0].colours()]
            else:
                period = max((b.period if b.is_conv else 0) for b in blankets)
                if not all(b.is_conv for b in blankets):   # a dense child couples all: single units
                    period = max(period, *self.net.shapes[k][-2:]) if len(self.net.shapes[k]) == 3 else None
                plan = list(zip(*(b.colours(period) for b in blankets)))
            self._plans[key] = [(cols, slice(int(cols[0].units), int(cols[0].units) + 1)
                                 if cols[0].units.numel() == 1 else cols[0].units) for cols in plan]
        return self._plans[key]

    def _update_layer(self, k: int, bits: dict[int, torch.Tensor], weights: Mapping[str, float],
                      probs: Optional[torch.Tensor]) -> None:
        x = bits[k]
        lead = x.shape[:-1]
        state = self.state(k, bits)
        own = self._own_logits(k, bits, weights, lead)
        terms = []
        for chain, w in self._child_terms(k, weights):
            c = chain.child(k)
            pre = chain.child_preactivation(k, state)
            target = self._target(c, bits)
            if chain.end_is_class(k):
                terms.append(_ChildTerm(chain, w, pre.expand(*lead, -1).clone(), target, categorical=True))
                continue
            L = self.net.units.bit_logits(pre).flatten(len(lead)).expand(*lead, -1).clone()
            # Σ_j t_j ΔL_ji: the transposed child map applied to the child's bits, once per layer
            t = self.shaped(c, target.expand(*lead, -1))
            own += (w * self.step * self.logit_scale) * chain.child_adjoint(k, t).flatten(len(lead))
            terms.append(_ChildTerm(chain, w, L, target, dense=not LayerBlanket(chain, k).is_conv))
        if self._lattice(k, terms, x, own, probs):
            return
        plan = self.colours(k, [t.chain for t in terms])
        for cols, units in plan:
            xs = _take(x, units)
            sign = 1 - 2 * xs                          # +1 where the unit is off: the move turns it on
            field = _take(own, units)
            for term, col in zip(terms, cols):
                field = field + term.propose(col, sign, xs.shape)
            p = torch.sigmoid(field)
            new = (torch.rand_like(p) < p).to(x.dtype)
            flip = new != xs
            for term, col in zip(terms, cols):
                term.accept(col, flip)
            _put(x, units, new)
            if probs is not None:
                _put(probs, units, p)

    def _lattice(self, k: int, terms: list[_ChildTerm], x: torch.Tensor, own: torch.Tensor,
                 probs: Optional[torch.Tensor]) -> bool:
        """Updates a conv layer whose every child term is a Bernoulli conv map by strided views and
        small convolutions (:mod:`.lattice`); False where that does not apply."""
        shape = tuple(self.net.shapes[k])
        if not terms or len(shape) != 3 or any(t.categorical for t in terms) or not x.is_contiguous():
            return False
        blankets = [LayerBlanket(t.chain, k) for t in terms]
        if not all(b.is_conv for b in blankets):
            return False
        period = max(b.period for b in blankets)
        lattice = []
        for t, b in zip(terms, blankets):
            key = ("lattice", k, t.chain.direction, period)
            if key not in self._plans:
                self._plans[key] = (lattice_deltas(b, period), {})
            lattice.append(LatticeTerm(b, t.weight, t.logits, *self._plans[key]))
        lattice_update(x, own, shape, lattice, period, probs)
        return True

    def _all_units(self, k: int) -> Colour:
        m = int(torch.Size(self.net.shapes[k]).numel())
        return Colour(torch.arange(m, device=self.net.input_bias.device), None, None, self.net.input_bias.new_zeros(()))
