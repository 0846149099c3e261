"""Variational mean field for the DCIM's sigmoid belief nets (Saul, Jaakkola & Jordan 1996).

A factorised ``q(h) = Π_i Bernoulli(h_i; σ(θ_i))`` over the hidden layers between an
observed start (``x^0`` forward, the class or a hidden state reverse) and, optionally,
an observed end (the class forward, the image reverse) maximises

    L(q) = E_q log p(h, end | start) + H(q)  ≤  log p(end | start)        (with no end: ≤ 0)

The Bernoulli terms ``E_q log(1 + e^{l})`` of each unit's bit logit ``l`` (mean ``m``,
variance ``v`` under ``q``, computed exactly with ``W`` and ``W∘W``) are bounded with the
Jaakkola-Jordan quadratic bound at its optimal ``ξ = √(m² + v)``:

    E log(1 + e^{l}) ≤ m/2 + log 2cosh(ξ/2)                                 (exact when v = 0)

It is *looser* than Saul et al.'s ``ξ⟨l⟩ + log⟨e^{−ξl} + e^{(1−ξ)l}⟩`` (which needs the
moment generating function edge by edge, ``batch × m_out × m_in`` exponentials per
evaluation, and has no convolutional form); it needs two products per layer, like AP2.
The class term ``E_q log Σ_c e^{a_c}`` is bounded by Jensen, ``≤ log Σ_c E_q e^{a_c}``
(the free parameter of the Blei-Lafferty bound at its optimum), with the exact
moment generating function of the factorised ``q`` (``batch × classes × m_{n-1}`` terms).

Fixed point: ``θ ← ∂F/∂q`` (``F = L − H``, the stationarity condition of ``L``) layer by
layer, each step damped to the best of ``η ∈ {1, ½, ¼, ⅛, 0}`` per image, so no
iteration decreases ``L``.  Everything is vectorised over any leading batch dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from ..chain import Chain
from .passes import Pass, first_order, preactivation_variance, probit_logit

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["VariationalFit", "variational_posterior", "fit_mean_field", "variational_pass", "softplus_bound",
           "DEFAULT_ITERATIONS", "DEFAULT_TOLERANCE"]

DEFAULT_ITERATIONS = 100
DEFAULT_TOLERANCE = 1e-5
_STEPS = (1.0, 0.5, 0.25, 0.125)


@dataclass
class VariationalFit:
    """``logits``: ``θ`` per hidden layer in chain order (``q = σ(θ)`` for the bits); ``hidden``:
    ``q(x^k = 1)`` in index order ``x^1 … x^{n-1}``; ``elbo``: the bound per image (with gradient to
    the parameters when grad mode is on, by the envelope theorem: ``q`` is detached);
    ``history``: the bound after each sweep, ``(sweeps + 1, *batch)``; ``converged``: every
    image gained less than the tolerance in the last sweep."""

    logits: list[torch.Tensor]
    hidden: list[torch.Tensor]
    elbo: torch.Tensor
    history: torch.Tensor
    iterations: int
    converged: bool


def softplus_bound(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Jaakkola-Jordan upper bound on ``E log(1 + e^z)``, ``E z = mean``, ``Var z = var``, at ``ξ² = E z²``.

    Written with ``ξ`` detached, ``softplus(ξ) − ξ/2 + m/2 + λ(ξ)(m² + v − ξ²)``, so its gradient
    is the envelope-theorem one and stays finite at ``ξ = 0``.
    """
    second = mean.square() + var
    xi = second.detach().clamp_min(0).sqrt()
    small = xi < 1e-3
    lam = torch.where(small, 0.125 - xi.square() / 96, torch.tanh(xi / 2) / (4 * xi.clamp_min(1e-3)))
    return F.softplus(xi) - xi / 2 + mean / 2 + lam * (second - xi.square())


def _bernoulli_entropy(theta: torch.Tensor) -> torch.Tensor:
    q = torch.sigmoid(theta)
    return F.softplus(theta) - q * theta


class _Problem:
    """The chain from ``start`` (at ``layer``) through ``hidden`` layers to an optional observed ``end``."""

    def __init__(self, net: "DCIM", start: torch.Tensor, direction: str, layer: int, hidden: list[int],
                 end: Optional[torch.Tensor]) -> None:
        self.net, self.start, self.layer, self.hidden, self.end = net, start, layer, hidden, end
        self.chain = Chain(net, direction)
        self.units = net.units
        self.c = self.units.logit_scale

    def _moments(self, k: int, mean: torch.Tensor, var: Optional[torch.Tensor]):
        """Mean and variance of ``x^k``'s bit logits given its parent's mean and variance (``None``: observed)."""
        m = self.chain.logits(k, mean)
        if var is None:
            return m, torch.zeros_like(m)
        return m, self.c ** 2 * preactivation_variance(self.net, k, var, self.chain.direction)

    def _state_moments(self, q: torch.Tensor):
        return self.units.state(q), self.c ** 2 * q * (1 - q)

    def energy(self, thetas: list[torch.Tensor]) -> torch.Tensor:
        """``L(q)`` per image, ``q = σ(θ)``; thetas in chain order."""
        total = self.expected_log_joint([torch.sigmoid(t) for t in thetas])
        for k, theta in zip(self.hidden, thetas):
            total = total + _bernoulli_entropy(theta).flatten(-len(self.net.shapes[k])).sum(-1)
        return total

    def expected_log_joint(self, qs: list[torch.Tensor]) -> torch.Tensor:
        """``F = L − H``: the bound on ``E_q log p(h, end | start)`` per image; ``qs`` bit probabilities."""
        mean, var = self.start, None
        total = 0.0
        for k, q in zip(self.hidden, qs):
            m, v = self._moments(k, mean, var)
            total = total + (q * m - softplus_bound(m, v)).flatten(-len(self.net.shapes[k])).sum(-1)
            mean, var = self._state_moments(q)
        if self.end is not None:
            total = total + self._end_term(mean, var, qs[-1])
        return total

    def _end_term(self, mean: torch.Tensor, var: Optional[torch.Tensor], q: torch.Tensor):
        last = self.hidden[-1] if self.hidden else self.layer
        if self.chain.end_is_class(last):
            # E a_y − log Σ_c E e^{a_c}: Jensen, with the exact moment generating function of q
            n = self.net.num_layers
            lay, a_mean = self.net.parent_layer(n), self.net.preactivation(n, mean)
            y = self.end.long().unsqueeze(-1).expand(*a_mean.shape[:-1], 1)
            flat = (q.flatten(-len(lay.in_shape)) if len(lay.in_shape) > 1 else q)[..., None, :]
            # log E e^{w x} = log(1 − q + q e^{w}) for {0,1}; −w + log(1 − q + q e^{2w}) for ±1: finite at q ∈ {0, 1}
            w = self.c * lay.weight
            log_mgf = torch.log1p((flat * torch.expm1(w)).clamp_min(-1 + torch.finfo(q.dtype).eps))
            if self.units.name == "pm1":
                log_mgf = log_mgf - lay.weight
            log_z = (log_mgf.sum(-1) + lay.bias).logsumexp(-1)
            return a_mean.gather(-1, y).squeeze(-1) - log_z
        m, v = self._moments(self.chain.child(last), mean, var)
        event = len(self.net.shapes[self.chain.child(last)])
        return (self.end * m - softplus_bound(m, v)).flatten(-event).sum(-1)

    def end_logits(self, thetas: list[torch.Tensor]) -> torch.Tensor:
        """The far end's bit logits (reverse: the image) under ``q``, by the probit approximation."""
        mean, var = self._state_moments(torch.sigmoid(thetas[-1]))
        return probit_logit(*self._moments(self.chain.child(self.hidden[-1]), mean, var))


def _initial_logits(net: "DCIM", problem: _Problem, x0_state: Optional[torch.Tensor]) -> list[torch.Tensor]:
    """The first-order pass: forward from ``x^0`` whenever the image is known (the recognition
    direction), else from the start."""
    if x0_state is not None and not problem.chain.forward:
        pre = first_order(net, x0_state, direction="forward", upto=problem.layer - 1).preactivations
        by_layer = dict(zip(range(1, problem.layer), pre))
    else:
        direction = "forward" if problem.chain.forward else "reverse"
        upto = problem.hidden[-1] if problem.chain.forward else None
        pre = first_order(net, problem.start, direction=direction, layer=problem.layer, upto=upto).preactivations
        by_layer = dict(zip(problem.hidden, pre))
    return [net.units.bit_logits(by_layer[k]).detach().clamp(-30, 30) for k in problem.hidden]


def fit_mean_field(net: "DCIM", start: torch.Tensor, *, direction: str = "forward", layer: int = 0,
                   upto: Optional[int] = None, end: Optional[torch.Tensor] = None,
                   x0_state: Optional[torch.Tensor] = None, iterations: int = DEFAULT_ITERATIONS,
                   tolerance: float = DEFAULT_TOLERANCE) -> VariationalFit:
    """Fit ``q`` by damped fixed-point sweeps; ``start`` in the unit encoding at ``layer``.

    ``end``: class indices (forward, ``upto`` must reach ``n-1``) or the image in [0, 1]
    (reverse, down to ``x^1``); ``x0_state``: the image's state, to initialise a reverse
    fit from the forward pass.  ``iterations``: most sweeps; ``tolerance``: stop when no
    image's bound rose by more than it (nats) in a sweep.
    """
    n = net.num_layers
    if direction == "forward":
        last = n - 1 if upto is None else min(upto, n - 1)
        hidden = list(range(layer + 1, last + 1))
        if end is not None and last != n - 1:
            raise ValueError("a class-clamped fit needs every hidden layer (upto >= n-1)")
    else:
        hidden = list(range(layer - 1, 0, -1))
    if not hidden:
        raise ValueError("variational mean field needs at least one hidden layer between the two ends")
    problem = _Problem(net, start, direction, layer, hidden, end)
    thetas = _initial_logits(net, problem, x0_state)
    if end is not None:   # one q per (image, end): e.g. every class for the same image
        end_batch = end.shape if direction == "forward" else end.shape[:end.dim() - len(net.input_shape)]
        thetas = [t.expand(*torch.broadcast_shapes(t.shape[:t.dim() - len(net.shapes[k])], end_batch),
                           *net.shapes[k]).clone() for t, k in zip(thetas, hidden)]
    with torch.no_grad():
        current = problem.energy(thetas)
    history = [current]
    converged = False
    for _ in range(iterations):
        before = current
        for i in range(len(thetas)):
            qs = [torch.sigmoid(t) for t in thetas]
            with torch.enable_grad():
                q = qs[i].requires_grad_(True)
                energy = problem.expected_log_joint([*qs[:i], q, *qs[i + 1:]]).sum()
                target = torch.autograd.grad(energy, q)[0].clamp(-30, 30)   # θ_i = ∂F/∂q_i: where ∂L/∂q_i = 0
            with torch.no_grad():
                t = thetas[i]
                steps = torch.tensor(_STEPS, dtype=t.dtype, device=t.device).view(-1, *[1] * t.dim())
                cands = [th.expand(len(_STEPS), *th.shape) for th in thetas]
                cands[i] = thetas[i] + steps * (target - thetas[i])
                values = problem.energy(cands)                      # (steps, *batch)
                best, idx = values.max(0)
                better = best > current
                chosen = cands[i].gather(0, idx.view(1, *idx.shape, *[1] * (t.dim() - idx.dim()))
                                         .expand(1, *t.shape)).squeeze(0)
                mask = better.view(*better.shape, *[1] * (t.dim() - better.dim()))
                thetas[i] = torch.where(mask, chosen, thetas[i])
                current = torch.where(better, best, current)
        history.append(current)
        if bool(((current - before) < tolerance).all()):
            converged = True
            break
    thetas = [t.detach() for t in thetas]
    elbo = problem.energy(thetas)       # with gradient to the parameters if grad mode is on
    hidden_q = dict(zip(hidden, (torch.sigmoid(t) for t in thetas)))
    return VariationalFit(thetas, [hidden_q[k] for k in sorted(hidden_q)], elbo, torch.stack(history), len(history) - 1,
                          converged)


def variational_posterior(net: "DCIM", x0: Optional[torch.Tensor] = None, *, y: Optional[torch.Tensor] = None,
                          direction: str = "forward", iterations: int = DEFAULT_ITERATIONS,
                          tolerance: float = DEFAULT_TOLERANCE) -> VariationalFit:
    """Mean-field ``q(x^1 … x^{n-1})`` and its bound, for the common conditionings.

    Forward: given ``x^0`` (and the class ``y`` when given; ``elbo ≤ log p(y | x^0)``, else
    ``≤ 0``).  Reverse: given the class ``y`` (and the image ``x0`` when given;
    ``elbo ≤ log p(x^0 | y)``).
    """
    chain = Chain(net, direction)
    chain.check(x0, y)
    if chain.forward:
        return fit_mean_field(net, chain.start_state(x0, None), direction="forward", end=y,
                              iterations=iterations, tolerance=tolerance)
    x0_state = None if x0 is None else net.units.state(x0)
    return fit_mean_field(net, chain.start_state(None, y), direction="reverse", layer=net.num_layers, end=x0,
                          x0_state=x0_state, iterations=iterations, tolerance=tolerance)


def variational_pass(net: "DCIM", start: torch.Tensor, *, direction: str = "forward", layer: int = 0,
                     upto: Optional[int] = None) -> Pass:
    """The ``"variational"`` approximation in the common signature (:mod:`pyro_dcim.approximations`).

    Hidden: ``q`` fitted given the start alone.  Forward class logits: the bound on
    ``log p(c | x^0)`` for every class ``c`` (one class-clamped fit each, batched), so
    ``softmax(logits)`` is the normalised bound.  Reverse image logits: ``E_q σ(l)`` by the
    probit approximation.  Effective pre-activations are ``θ / c`` (``bit_logits`` gives ``θ``).
    """
    n = net.num_layers
    c = net.units.logit_scale
    last = n if upto is None else min(upto, n)
    has_hidden = (layer + 1 <= min(last, n - 1)) if direction == "forward" else layer > 1
    if not has_hidden:   # nothing to fit: the one conditional is factorised and (2) is exact
        return first_order(net, start, direction=direction, layer=layer, upto=upto)
    fit = fit_mean_field(net, start, direction=direction, layer=layer, upto=min(last, n - 1))
    pre = [t / c for t in fit.logits]
    hidden = [net.units.mean(a) for a in pre]
    if direction == "forward":
        logits = start.new_empty(0)
        if last == n:
            classes = torch.arange(net.num_classes, device=start.device)
            ends = classes.view(-1, *[1] * (start.dim() - len(net.input_shape))).expand(-1, *start.shape[
                :start.dim() - len(net.input_shape)])
            per_class = fit_mean_field(net, start, direction="forward", layer=layer, end=ends)
            logits = per_class.elbo.movedim(0, -1)
        return Pass(hidden, pre, logits)
    problem = _Problem(net, start, direction, layer, list(range(layer - 1, 0, -1)), None)
    return Pass(hidden, pre, problem.end_logits(fit.logits))
