"""Unit encodings of binary variables: {0, 1} (eq. 6-7) or {-1, +1} (eq. 8-9).

Pyro's Bernoulli sites always hold bits ``s ∈ {0, 1}``; an encoding says which
state ``x`` a bit stands for, the Bernoulli logit of ``s = 1`` given the
pre-activation ``a``, and the mean ``E[x]`` that the mean-field pass propagates.
"""

from __future__ import annotations

import torch

__all__ = ["Units", "ZeroOne", "PlusMinusOne", "get_units", "all_bit_states", "log1p_exp"]


def all_bit_states(m: int, like: torch.Tensor) -> torch.Tensor:
    """All ``2^m`` bit vectors as rows of a ``(2^m, m)`` float tensor (unit 0 the highest bit)."""
    codes = torch.arange(1 << m, device=like.device)
    shifts = torch.arange(m - 1, -1, -1, device=like.device)
    return ((codes[:, None] >> shifts) & 1).to(like.dtype)


def log1p_exp(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^l)``, the log-normaliser of a bit with logit ``l``, to full precision:
    ``F.softplus`` returns ``l`` itself above ``l = 20``, an error of ``e^{-20} ≈ 2e-9`` that
    float64 enumeration would carry.  (As fast as softplus: one kernel.)"""
    return torch.logaddexp(logits, logits.new_zeros(()))


class Units:
    name: str
    #: ``c`` in ``bit_logits(a) = c · a``: 1 for {0,1}, 2 for ±1 (eq. 9: ``p(x=1|a) = σ(2a)``).
    logit_scale: float

    def state(self, bits: torch.Tensor) -> torch.Tensor:
        """The state ``x`` for bits (or bit probabilities) ``s``; linear, so it maps means to means."""
        raise NotImplementedError

    def bit_logits(self, a: torch.Tensor) -> torch.Tensor:
        """Logit of ``p(s = 1 | a)``."""
        raise NotImplementedError

    def mean(self, a: torch.Tensor) -> torch.Tensor:
        """``E[x | a]``: the mean-field activation (sigmoid or tanh)."""
        raise NotImplementedError

    def bit_probs(self, mean: torch.Tensor) -> torch.Tensor:
        """``p(s = 1)`` from the mean ``E[x]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.name)


class ZeroOne(Units):
    """``x = s``: ``p(x=1|a) = σ(a)``, ``E[x] = σ(a)`` (eq. 6-7)."""

    name = "01"
    logit_scale = 1.0

    def state(self, bits):
        return bits

    def bit_logits(self, a):
        return a

    def mean(self, a):
        return torch.sigmoid(a)

    def bit_probs(self, mean):
        return mean


class PlusMinusOne(Units):
    """``x = 2s - 1``: ``p(x=1|a) = σ(2a)``, ``E[x] = tanh(a)`` (eq. 8-9)."""

    name = "pm1"
    logit_scale = 2.0

    def state(self, bits):
        return 2 * bits - 1

    def bit_logits(self, a):
        return 2 * a

    def mean(self, a):
        return torch.tanh(a)

    def bit_probs(self, mean):
        return (mean + 1) / 2


_UNITS = {"01": ZeroOne(), "pm1": PlusMinusOne()}


def get_units(name: str) -> Units:
    try:
        return _UNITS[name]
    except KeyError:
        raise ValueError(f"units must be '01' or 'pm1', got {name!r}") from None
