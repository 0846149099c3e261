"""The DCIM's layer chain read in one direction, for estimators that walk it state by state.

The conditionals themselves are the net's (:meth:`~pyro_dcim.model.DCIM.conditional_logits`,
:meth:`~pyro_dcim.model.DCIM.preactivation`); :class:`Chain` fixes a direction and names the
neighbours: the forward chain (eq. 13: ``p(x^k | x^{k-1})``, parent ``k-1``, child ``k+1``)
or the reverse chain (eq. 17-18: ``p(x^{k-1} | x^k)``, parent ``k+1``, child ``k-1``), with
the start, the far end and the tied layer between a layer and its child that exact
enumeration, Gibbs sampling and AIS need.

States are in the unit encoding (``net.units.state(bits)``); bits are float 0/1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Union

import torch

from .units import log1p_exp
from .validation import check_direction, check_images, check_labels

if TYPE_CHECKING:
    from .model import DCIM

__all__ = ["Chain"]


def bernoulli_log_prob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log Bernoulli(t; σ(l))``; soft targets give the negative cross-entropy."""
    return target * logits - log1p_exp(logits)


class Chain:
    """Hidden layers ``1..n-1`` of ``net`` as a Markov chain running in ``direction``.

    ``start`` is the observed end the chain starts from (``x^0`` forward, the class
    ``x^n`` reverse) and ``end`` the far end (the class forward, the image reverse).
    ``order`` lists the hidden layers from the start: ``[1..n-1]`` or ``[n-1..1]``.
    """

    def __init__(self, net: "DCIM", direction: str = "forward") -> None:
        self.net = net
        self.direction = check_direction(direction)
        self.forward = direction == "forward"
        n = net.num_layers
        self.hidden = list(range(1, n))
        self.order = self.hidden if self.forward else self.hidden[::-1]
        self.units = net.units

    # -- neighbours ------------------------------------------------------------
    def parent(self, k: int) -> int:
        return k - 1 if self.forward else k + 1

    def child(self, k: int) -> int:
        return k + 1 if self.forward else k - 1

    def numel(self, k: int) -> int:
        return int(torch.Size(self.net.shapes[k]).numel())

    def check(self, x0: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> None:
        """The public checks of images and labels (value checks follow ``pyro.validation_enabled``)."""
        if x0 is not None:
            check_images(x0, self.net.input_shape, dtype=self.net.input_bias.dtype)
        if y is not None and not y.is_floating_point():
            check_labels(y, self.net.num_classes)

    def start_state(self, x0: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> torch.Tensor:
        """The observed start in the unit encoding: ``state(x^0)`` forward, ``onehot(y)`` reverse."""
        if self.forward:
            if x0 is None:
                raise ValueError("the forward chain needs the image x0")
            return self.units.state(x0)
        if y is None:
            raise ValueError("the reverse chain needs the class y")
        return self.net.class_state(y)

    # -- the conditionals --------------------------------------------------------
    def logits(self, k: int, parent_state: torch.Tensor) -> torch.Tensor:
        """Bit logits of ``p(x^k = 1 | parent)`` (:meth:`DCIM.conditional_logits`); ``(*batch, *shape_k)``."""
        return self.net.conditional_logits(k, parent_state, self.direction)

    def child_preactivation(self, k: int, state: torch.Tensor) -> torch.Tensor:
        """Pre-activation of layer ``k``'s child given ``x^k`` (with the child's bias):
        ``W^{k+1} x^k + b^{k+1}`` forward, ``W^kᵀ x^k + b^{k-1}`` reverse (:meth:`DCIM.preactivation`)."""
        return self.net.preactivation(self.child(k), state, self.direction)

    def child_linear(self, k: int, state: torch.Tensor) -> torch.Tensor:
        """The child pre-activation's linear part alone (``W^{k+1} x`` or ``W^kᵀ x``)."""
        layer = self.child_layer(k)
        return layer(state) - layer.bias if self.forward else layer.adjoint(state)

    def child_adjoint(self, k: int, child: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`child_linear`: ``W^{k+1}ᵀ c`` forward, ``W^k c`` reverse, shaped like ``x^k``."""
        layer = self.child_layer(k)
        if self.forward:
            return layer.weight_transpose(child)
        if layer.tied:  # the forward map less its bias, as it always was tied
            return layer(child) - layer.bias
        return layer.adjoint_transpose(child)

    def child_weight(self, k: int) -> torch.Tensor:
        """The weight of the map from ``x^k`` to its child: ``W^{k+1}`` forward, ``W^k``'s reverse copy
        (``W^k`` itself when tied) reverse."""
        layer = self.child_layer(k)
        return layer.weight if self.forward else layer.adjoint_weight

    def child_layer(self, k: int) -> torch.nn.Module:
        """The tied layer between ``x^k`` and its child (``W^{k+1}`` forward, ``W^k`` reverse)."""
        return self.net.parent_layer(self.child(k), self.direction)

    def end_is_class(self, k: int) -> bool:
        """Is ``k``'s child the categorical class (the forward chain's last hidden layer)?"""
        return self.forward and k == self.net.num_layers - 1

    def child_log_prob(self, k: int, preact: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``log p(child = target | x^k)`` from the child's pre-activation, summed over the child.

        ``target``: class indices when the child is the class, else bits (or soft image
        intensities) shaped like the child.  Returns ``preact``'s batch shape.
        """
        if self.end_is_class(k):
            # a_y − logsumexp(a); log_softmax is far slower on tiny tensors under thread contention
            a, idx = torch.broadcast_tensors(preact, target.long().unsqueeze(-1))
            return a.gather(-1, idx[..., :1]).squeeze(-1) - preact.logsumexp(-1)
        event = len(self.net.shapes[self.child(k)])
        return bernoulli_log_prob(self.units.bit_logits(preact), target).flatten(-event).sum(-1)

    @torch.no_grad()
    def sample(self, start: torch.Tensor, particles: int = 1, generator: Optional[torch.Generator] = None,
               upto: Optional[int] = None, temperature: Union[float, Mapping[int, float]] = 1.0
               ) -> dict[int, torch.Tensor]:
        """Ancestral draws of the hidden layers given the start state: ``{k: bits (particles, batch, m_k)}``,
        flat float 0/1 (the layout :class:`~pyro_dcim.inference.energy.ChainEnergy` scores).

        The one ancestral sampler of the chains: generation, simulation, AIS's start, the Gibbs
        kernel's initial state and the objectives' particles all draw through it.  ``upto``: stop
        after drawing that layer (default: the last hidden layer from the start).  ``temperature``:
        draw every layer, or the layers a ``{k: T}`` mapping names, from ``sigmoid(a / T)`` instead of
        ``sigmoid(a)`` (generation only: ``T > 1`` flattens the conditionals, ``T < 1`` sharpens them;
        1 is the model)."""
        temperatures = temperature if isinstance(temperature, Mapping) else dict.fromkeys(self.order, temperature)
        for k, t in temperatures.items():
            if k not in self.order:
                raise ValueError(f"temperature for layer {k}, which is not a hidden layer 1..{len(self.order)}")
            if not t > 0:
                raise ValueError(f"temperature must be > 0, got {t} for layer {k}")
        parent, out = start, {}
        for k in self.order:
            logits, t = self.logits(k, parent), temperatures.get(k, 1.0)
            p = torch.sigmoid(logits if t == 1.0 else logits / t)
            p = p.expand(particles, *p.shape[-1 - len(self.net.shapes[k]):])
            bits = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p).to(p.dtype)
            parent = self.units.state(bits)
            out[k] = bits.flatten(2)
            if k == upto:
                break
        return out
