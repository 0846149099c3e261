"""Exact inference by enumeration, for nets whose hidden layers are narrow.

The chain ``x^0 → x^1 → … → x^n`` (or its reverse) is a Markov chain over layers, so
its marginals need only each layer's ``2^{m_k}`` states, never the joint:

    forward messages   α_k(s) = Σ_{s'} α_{k-1}(s') p(x^k = s | x^{k-1} = s')
    backward messages  β_k(s) = Σ_{s''} p(x^{k+1} = s'' | x^k = s) β_{k+1}(s''),
                       β_{last}(s) = p(end | x^{last} = s)

(the paper's "propagate the full distribution over all states of each layer"; with
``β`` it gives the posterior ``p(x^k | x^0, x^n) ∝ α_k β_k`` and the evidence
``Σ_s α_k(s) β_k(s)``).  Transition matrices are built in chunks of the previous
layer's states, so memory stays bounded; the work is ``2^{m_{k-1}} · 2^{m_k}`` per layer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator, Optional

import torch
import torch.nn.functional as F

from ..chain import Chain
from ..pyro_models import hidden_site
from ..units import all_bit_states, log1p_exp
from .energy import ChainEnergy, posterior_weights
from .marginals import Marginals
from .mean_field import mean_field_marginals

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["LayerTooWideError", "exact_marginals", "exact_posterior", "exact_log_likelihood", "exact_importance_ess",
           "all_bit_states", "DEFAULT_MAX_UNITS"]

#: Default limit on the units of one hidden layer (2^16 states).
DEFAULT_MAX_UNITS = 16
# Elements of one transition / likelihood chunk (keeps peak memory near 32 MB in float64).
_CHUNK_ELEMENTS = 1 << 22


class LayerTooWideError(ValueError):
    """A hidden layer has more units than exact enumeration allows."""


class _Enumerator:
    """Forward/backward messages of the hidden chain of ``net`` in one direction."""

    def __init__(self, net: "DCIM", direction: str, max_units: int) -> None:
        self.chain = Chain(net, direction)
        self.net = net
        like = net.input_bias
        for k in self.chain.hidden:
            m = self.chain.numel(k)
            if m > max_units:
                raise LayerTooWideError(
                    f"exact enumeration: hidden layer x{k} has {m} units (shape {tuple(net.shapes[k])}), "
                    f"more than the limit of {max_units} (2^{m} states); use a sampling estimator "
                    "or raise max_units")
        self.bits = {k: all_bit_states(self.chain.numel(k), like) for k in self.chain.hidden}

    def states(self, k: int, rows: slice) -> torch.Tensor:
        return self.chain.units.state(self.bits[k][rows]).reshape(-1, *self.net.shapes[k])

    def row_chunks(self, k: int, per_row: int) -> Iterator[slice]:
        total, step = self.bits[k].shape[0], max(1, _CHUNK_ELEMENTS // max(per_row, 1))
        return (slice(i, min(i + step, total)) for i in range(0, total, step))

    def log_bernoulli_table(self, k: int, logits: torch.Tensor) -> torch.Tensor:
        """``log p(x^k = s | ·)`` for every state ``s``: ``(rows, 2^{m_k})`` from logits ``(rows, *shape_k)``."""
        logits = logits.flatten(1)
        return logits @ self.bits[k].T - log1p_exp(logits).sum(-1, keepdim=True)

    # -- forward messages ------------------------------------------------------------
    def alphas(self, start: torch.Tensor) -> list[torch.Tensor]:
        """``[α_k]`` in chain order, each ``(batch, 2^{m_k})`` (probabilities; rows sum to 1)."""
        first = self.chain.order[0]
        alpha = self.log_bernoulli_table(first, self.chain.logits(first, start)).exp()
        out = [alpha]
        for k_prev, k in zip(self.chain.order, self.chain.order[1:]):
            nxt = alpha.new_zeros(alpha.shape[0], self.bits[k].shape[0])
            for rows in self.row_chunks(k_prev, self.bits[k].shape[0]):
                trans = self.log_bernoulli_table(k, self.chain.logits(k, self.states(k_prev, rows))).exp()
                nxt = nxt + alpha[:, rows] @ trans
            alpha = nxt
            out.append(alpha)
        return out

    # -- the far end --------------------------------------------------------------------
    def end_log_lik(self, end: torch.Tensor) -> torch.Tensor:
        """``log p(end | x^{last} = s)`` for every state: ``(batch, 2^{m_last})``.

        ``end``: class indices ``(batch,)`` forward, images ``(batch, *input_shape)`` reverse.
        """
        last = self.chain.order[-1]
        target = end[:, None]
        per_row = end.shape[0] * max(end[0].numel(), self.net.num_classes)
        parts = [self.chain.child_log_prob(last, self.chain.child_preactivation(last, self.states(last, rows))[None],
                                           target)
                 for rows in self.row_chunks(last, per_row)]
        return torch.cat(parts, 1)

    def end_expectation(self, alpha_last: torch.Tensor) -> torch.Tensor:
        """``Σ_s α(s) p(end | s)`` as marginals of the end: class probabilities or pixel probabilities."""
        last = self.chain.order[-1]
        end_shape = self.net.shapes[self.chain.child(last)]
        out = alpha_last.new_zeros(alpha_last.shape[0], int(torch.Size(end_shape).numel()))
        for rows in self.row_chunks(last, out.shape[1]):
            pre = self.chain.child_preactivation(last, self.states(last, rows))
            if self.chain.end_is_class(last):
                probs = pre.softmax(-1)
            else:
                probs = torch.sigmoid(self.chain.units.bit_logits(pre))
            out = out + alpha_last[:, rows] @ probs.flatten(1)
        return out.reshape(-1, *end_shape)

    # -- backward messages ------------------------------------------------------------------
    def log_betas(self, end: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Scaled ``β_k`` in chain order and their log scales: ``β_k = scaled · exp(log_scale)``."""
        log_beta = self.end_log_lik(end)
        scale = log_beta.max(-1, keepdim=True).values
        beta = (log_beta - scale).exp()
        betas, scales = [beta], [scale]
        for k, k_next in zip(self.chain.order[-2::-1], self.chain.order[:0:-1]):
            prev = beta.new_empty(beta.shape[0], self.bits[k].shape[0])
            for rows in self.row_chunks(k, self.bits[k_next].shape[0]):
                trans = self.log_bernoulli_table(k_next, self.chain.logits(k_next, self.states(k, rows))).exp()
                prev[:, rows] = beta @ trans.T
            top = prev.max(-1, keepdim=True).values.clamp_min(torch.finfo(prev.dtype).tiny)
            beta, scale = prev / top, scale + top.log()
            betas.insert(0, beta)
            scales.insert(0, scale)
        return betas, scales


def _hidden_in_index_order(enum: _Enumerator, per_layer: list[torch.Tensor]) -> list[torch.Tensor]:
    """Bit marginals from state distributions given in chain order, returned as ``x^1 … x^{n-1}``."""
    by_layer = {k: (p @ enum.bits[k]).reshape(-1, *enum.net.shapes[k]) for k, p in zip(enum.chain.order, per_layer)}
    return [by_layer[k] for k in enum.chain.hidden]


@torch.no_grad()
def exact_marginals(net: "DCIM", x0: Optional[torch.Tensor] = None, *, y: Optional[torch.Tensor] = None,
                    direction: str = "forward", max_units: int = DEFAULT_MAX_UNITS) -> Marginals:
    """Exact ``p(x^k_i = 1 | x^0)`` and ``p(x^n | x^0)`` (forward, eq. 13), or
    ``p(x^k_i = 1 | x^n = y)`` down to the image (``direction="reverse"``, eq. 17).

    Raises :class:`LayerTooWideError` naming the layer, its width and the limit when
    a hidden layer has more than ``max_units`` units.
    """
    enum = _Enumerator(net, direction, max_units)
    enum.chain.check(x0, y)
    if not enum.chain.hidden:   # n = 1: the single conditional is factorised, mean field is exact
        return mean_field_marginals(net, x0, y=y, direction=direction)
    alphas = enum.alphas(enum.chain.start_state(x0, y))
    end = enum.end_expectation(alphas[-1])
    hidden = _hidden_in_index_order(enum, alphas)
    if enum.chain.forward:
        return Marginals(hidden, classes=end, method="exact", direction=direction)
    return Marginals(hidden, image=end, method="exact", direction=direction)


@torch.no_grad()
def exact_posterior(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, *, direction: str = "forward",
                    max_units: int = DEFAULT_MAX_UNITS) -> Marginals:
    """Exact ``p(x^k_i = 1 | x^0, x^n = y)`` for every hidden unit, by forward-backward messages.

    ``direction="forward"`` conditions the forward chain (eq. 13) on its class,
    ``"reverse"`` the reverse chain (eq. 17) on its image; ``log_evidence`` is
    ``log p(y | x^0)`` or ``log p(x^0 | y)`` respectively.
    """
    enum = _Enumerator(net, direction, max_units)
    enum.chain.check(x0, y)
    if not enum.chain.hidden:
        raise ValueError("the net has no hidden layers: there is no posterior to compute")
    alphas = enum.alphas(enum.chain.start_state(x0, y))
    betas, scales = enum.log_betas(y if enum.chain.forward else x0)
    posts = [a * b for a, b in zip(alphas, betas)]
    log_evidence = (posts[-1].sum(-1).log() + scales[-1].squeeze(-1))
    posts = [p / p.sum(-1, keepdim=True) for p in posts]
    return Marginals(_hidden_in_index_order(enum, posts), log_evidence=log_evidence,
                     method="exact_posterior", direction=direction)


@torch.no_grad()
def exact_log_likelihood(net: "DCIM", x0: torch.Tensor, y: torch.Tensor,
                         max_units: int = DEFAULT_MAX_UNITS) -> torch.Tensor:
    """``log p(x^0 | x^n = y)`` of the reverse model (eq. 17), summing out every hidden layer.

    ``x0``: ``(batch, *input_shape)`` bits (intensities in [0, 1] give the soft
    cross-entropy, as in the Pyro model); returns ``(batch,)`` nats.
    """
    enum = _Enumerator(net, "reverse", max_units)
    enum.chain.check(x0, y)
    if not enum.chain.hidden:
        logits = net.reverse_mean_field(y).logits
        return -F.binary_cross_entropy_with_logits(logits, x0, reduction="none").flatten(1).sum(1)
    alpha = enum.alphas(enum.chain.start_state(x0, y))[-1]
    return torch.logsumexp(alpha.log() + enum.end_log_lik(x0), -1)


@torch.no_grad()
def exact_importance_ess(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, num_samples: int, *,
                         direction: str = "forward", proposal: str = "defensive",
                         max_units: int = DEFAULT_MAX_UNITS) -> torch.Tensor:
    """The large-sample ESS ``S (E_q w)² / E_q w²`` of :func:`~.sampling.importance_marginals`'s
    posterior weights, ``(batch,)``, summing over every joint hidden state (all hidden layers
    together have at most ``max_units`` units): the reference a reported ESS is checked against.

    ``E_q w = Σ_h p(x, h)`` and ``E_q w² = Σ_h p(x, h) w(h)``, with ``w`` the sampler's own
    log-weights at each state (the same proposal, mixture included)."""
    from .sampling import _log_weights_at, _proposal, _target  # sampling's proposals, scored as it scores them

    m = [math.prod(net.shapes[k]) for k in range(1, net.num_layers)]
    if sum(m) > max_units:
        raise LayerTooWideError(f"the hidden layers have {sum(m)} units together: 2^{sum(m)} joint states is more "
                                f"than max_units={max_units} allows")
    joint = all_bit_states(sum(m), x0)
    b = y.shape[0]
    bits = {k + 1: part[:, None].expand(-1, b, -1) for k, part in enumerate(joint.split(m, 1))}
    log_p = ChainEnergy(net, x0, y).log_density(bits, posterior_weights(direction)).double()
    drawn = {hidden_site(k): v.reshape(v.shape[0], b, *net.shapes[k]) for k, v in bits.items()}
    log_w = _log_weights_at(_proposal(net, proposal, x0, y, direction), _target(net, direction, x0, y),
                            drawn).double()
    return num_samples * (2 * log_p.logsumexp(0) - (log_p + log_w).logsumexp(0)).exp()
