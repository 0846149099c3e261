"""The closed-form passes: first-order, eq. (2), (14)-(15), and AP2 (Shekhovtsov & Flach 2019).

Both have the signature of :mod:`pyro_dcim.approximations` and return a :class:`Pass`.  The
moment pieces they share (``(W∘W) v``, unit variances, the probit approximation of ``E σ``)
are public here for the variational fit (:mod:`.variational`) and the analyses.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..layers import TiedConv2d

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["Pass", "first_order", "ap2", "squared_map", "preactivation_variance", "unit_variance", "probit_logit",
           "softmax_expectation_logits", "PROBIT_CONSTANT"]

#: ``λ²`` of ``σ(t) ≈ Φ(λ t)``: ``π / 8`` matches the slopes at 0 (``σ'(0) = 1/4 = λ φ(0)``; MacKay 1992).
PROBIT_CONSTANT = math.pi / 8


class Pass(NamedTuple):
    """One approximation's result: see :mod:`pyro_dcim.approximations` for the three fields."""

    hidden: list[torch.Tensor]
    preactivations: list[torch.Tensor]
    logits: torch.Tensor


# -- shared pieces -----------------------------------------------------------------------------
def squared_map(layer: torch.nn.Module, v: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
    """``(W∘W) v`` (or ``(W∘W)ᵀ v``): the variance of ``W x`` for independent ``x`` of variance ``v``.

    The layer's own linear map with every weight squared and no bias, dense or conv.
    """
    w2 = (layer.adjoint_weight if adjoint else layer.weight).square()   # the reverse copy when untied
    if isinstance(layer, TiedConv2d):
        src, dst = (layer.out_shape, layer.in_shape) if adjoint else (layer.in_shape, layer.out_shape)
        flat = v.reshape(-1, *src)
        if adjoint:
            out = F.conv_transpose2d(flat, w2, stride=layer.stride, padding=layer.padding,
                                     output_padding=layer.output_padding)
        else:
            out = F.conv2d(flat, w2, stride=layer.stride, padding=layer.padding)
        return out.reshape(*v.shape[:v.dim() - len(src)], *dst)
    if adjoint:
        out = v @ w2
        return out.unflatten(-1, layer.in_shape) if len(layer.in_shape) > 1 else out
    if len(layer.in_shape) > 1:
        v = v.flatten(-len(layer.in_shape))
    return F.linear(v, w2)


def preactivation_variance(net: "DCIM", k: int, var: torch.Tensor, direction: str = "forward") -> torch.Tensor:
    """``Var a^k = (W∘W) v``: the variance of ``x^k``'s pre-activation (:meth:`DCIM.preactivation`)
    when its parent's units are independent with variances ``v``."""
    return squared_map(net.parent_layer(k, direction), var, adjoint=direction == "reverse")


def unit_variance(units, mean: torch.Tensor) -> torch.Tensor:
    """``Var x`` of a binary unit from its mean: ``μ(1−μ)`` for {0,1}, ``1−μ²`` for ±1."""
    return mean * (1 - mean) if units.name == "01" else 1 - mean.square()


def probit_logit(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``t`` with ``σ(t) ≈ E σ(z)`` for ``z ~ N(mean, var)``: ``mean / √(1 + π var / 8)``.

    From ``σ(z) ≈ Φ(λz)``, ``E Φ(λz) = Φ(λ m / √(1 + λ² v))`` exactly, and back to σ.
    """
    return mean * torch.rsqrt(1 + PROBIT_CONSTANT * var)


def _effective_preactivation(units, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``a_eff`` with ``σ(c a_eff) ≈ E σ(c a)``, ``a ~ N(mean, var)``; the probit acts on the bit logit ``c a``."""
    c = units.logit_scale
    return probit_logit(c * mean, c * c * var) / c


def softmax_expectation_logits(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Logits ``l`` with ``softmax(l) ≈ E softmax(a)``, ``a ~ N(mean, cov)`` (``(*B, C)``, ``(*B, C, C)``).

    ``softmax_c(a) = 1 / (1 + Σ_{c'≠c} exp(−d_{cc'}))`` with ``d_{cc'} = a_c − a_{c'}``; each
    pairwise logistic term gets the probit correction of its own difference,
    ``d → (m_c − m_{c'}) / √(1 + π Var d / 8)`` (so for two classes it is the probit
    approximation of ``E σ(d)``), and the ``C`` results are renormalised.  On random Gaussians
    it is closer to a Monte-Carlo ``E softmax`` than a moment-matched log-normal for
    ``Σ_{c'} exp(−d_{cc'})`` (Fenton-Wilkinson) once the variances exceed about 1
    (see docs/approximations.md).
    """
    diag = cov.diagonal(dim1=-2, dim2=-1)
    return _pairwise_softmax_logits(mean, diag[..., :, None] + diag[..., None, :] - 2 * cov)


def _pairwise_softmax_logits(mean: torch.Tensor, var_diff: torch.Tensor) -> torch.Tensor:
    """:func:`softmax_expectation_logits` from ``Var(a_c − a_{c'})`` directly, ``(*B, C, C)``."""
    md = mean[..., :, None] - mean[..., None, :]                       # m_c − m_{c'}
    t = probit_logit(md, var_diff.clamp_min(0))
    eye = torch.eye(mean.shape[-1], dtype=torch.bool, device=mean.device)
    others = (-t).masked_fill(eye, torch.finfo(mean.dtype).min).logsumexp(-1)
    return (-F.softplus(others)).log_softmax(-1)


# -- the passes --------------------------------------------------------------------------------
def _steps(net: "DCIM", direction: str, layer: int, upto: Optional[int]):
    """``(k, is_end)`` for each layer the pass reaches from ``layer``: the class or the image is the end."""
    n = net.num_layers
    if direction == "forward":
        last = n if upto is None else min(upto, n)
        for k in range(layer + 1, last + 1):
            yield k, k == n
        return
    for k in range(layer - 1, -1, -1):
        yield k, k == 0


def first_order(net: "DCIM", start: torch.Tensor, *, direction: str = "forward", layer: int = 0,
                upto: Optional[int] = None) -> Pass:
    """Eq. (2), (14)-(15) and the tied reverse pass (17-18): ``μ^k = mean(W^k μ^{k-1} + b^k)``."""
    units, h = net.units, start
    hidden, pre = [], []
    logits = h.new_empty(0)
    for k, end in _steps(net, direction, layer, upto):
        if end:
            logits = net.conditional_logits(k, h, direction)
            break
        a = net.preactivation(k, h, direction)
        h = units.mean(a)
        pre.append(a)
        hidden.append(h)
    return Pass(hidden, pre, logits)


def _start_variance(net: "DCIM", start: torch.Tensor, direction: str, layer: int) -> Optional[torch.Tensor]:
    """Variance of the observed start: none (``x^0`` and a given hidden state are conditioned on),
    except class probabilities, read as a one-hot of diagonal variance ``p(1-p)``."""
    if direction == "reverse" and layer == net.num_layers and start.is_floating_point():
        var = start * (1 - start)
        return var if bool(var.any()) else None
    return None


def ap2(net: "DCIM", start: torch.Tensor, *, direction: str = "forward", layer: int = 0,
        upto: Optional[int] = None) -> Pass:
    """AP2 (Shekhovtsov & Flach, ICLR 2019): propagate mean ``μ`` and variance ``v`` of every unit.

    With independent inputs, ``a = W x + b`` has mean ``W μ + b`` and variance ``(W∘W) v``;
    a unit's bit logit ``c a`` (``c = 1`` for {0,1}, ``2`` for ±1) is taken Gaussian and
    ``p(x = 1) ≈ σ(c m / √(1 + π c² s² / 8))`` (:func:`probit_logit`); then
    ``μ = E x``, ``v = unit_variance(μ)``.  With ``v = 0`` (observed parents: the first
    layer) this is exactly (2), and that product is skipped.  The class layer's ``E softmax(a)``
    uses the variances of the class differences, ``Var(a_c − a_c') = Σ_j (W_cj − W_c'j)² v_j``
    (:func:`softmax_expectation_logits`).
    """
    units, h = net.units, start
    v = _start_variance(net, start, direction, layer)   # None: observed, no variance
    hidden, pre = [], []
    logits = h.new_empty(0)
    for k, end in _steps(net, direction, layer, upto):
        m = net.preactivation(k, h, direction)
        if end and direction == "forward":
            if v is None:
                logits = m
                break
            # Var(a_c − a_c') = Σ_j (W_cj − W_c'j)² v_j: one product with the C² squared row differences
            lay = net.parent_layer(k)
            w = lay.weight
            vx = v.flatten(-len(lay.in_shape)) if len(lay.in_shape) > 1 else v
            diff2 = (w[:, None, :] - w[None, :, :]).square().reshape(-1, w.shape[1])
            logits = _pairwise_softmax_logits(m, F.linear(vx, diff2).unflatten(-1, (w.shape[0], w.shape[0])))
            break
        a = m if v is None else _effective_preactivation(units, m, preactivation_variance(net, k, v, direction))
        if end:
            logits = units.bit_logits(a)
            break
        h = units.mean(a)
        v = unit_variance(units, h)
        pre.append(a)
        hidden.append(h)
    return Pass(hidden, pre, logits)
