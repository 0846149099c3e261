"""Weighted sums streamed over chunks of particles, with the largest weights kept for PSIS.

Importance sampling runs its particles chunk by chunk, so it cannot hold every weight of an image.
:class:`WeightedMoments` streams ``Σ w f``, ``Σ w² f`` and ``Σ w² f²`` with a running log-shift, and
keeps the readouts of the current largest-weight particles (:class:`_Tail`): Pareto smoothing
(:mod:`.weights`) changes only those, so the streamed sums are corrected exactly at the end.
"""

from __future__ import annotations

from typing import Optional

import torch

from .weights import tail_length

__all__ = ["WeightedMoments", "FEW_PARTICLES"]

#: A 0/1 unit on (or off) in fewer effective particles than this gets the largest weight added to its variance.
FEW_PARTICLES = 10


class _Tail:
    """The ``m`` largest-weight particles of each image, across chunks: log-weights, their
    positions in the whole run, and their readouts (what PSIS smooths).

    Once ``m`` are kept, a chunk's particles that enter the top ``m`` overwrite the slots of those
    they push out, so only the entering rows are copied (about ``m log(S/m)`` per image over a run):
    re-gathering all ``m`` readouts per chunk took a third of importance sampling on the dense net."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.log_w: Optional[torch.Tensor] = None
        self.index: Optional[torch.Tensor] = None
        self.values: dict[str, torch.Tensor] = {}

    def update(self, log_w: torch.Tensor, values: dict[str, torch.Tensor], offset: int) -> None:
        index = torch.arange(offset, offset + log_w.shape[0], device=log_w.device)[:, None].expand(log_w.shape)
        if self.log_w is None or self.log_w.shape[0] < self.m:
            self._select(log_w, index, values)
        else:
            self._replace(log_w, index, values)

    def _select(self, log_w: torch.Tensor, index: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Until ``m`` are kept: the top ``m`` of what is kept and the chunk, gathered afresh."""
        if self.log_w is not None:
            log_w, index = torch.cat([self.log_w, log_w]), torch.cat([self.index, index])
        top = log_w.topk(min(self.m, log_w.shape[0]), dim=0).indices
        self.log_w, self.index = log_w.gather(0, top), index.gather(0, top)
        for name, v in values.items():
            kept = self.values.get(name)
            if v.stride(0) == 0 and (kept is None or kept.stride(0) == 0):
                # a per-image readout broadcast over the particles: every particle's is the same
                self.values[name] = v[:1].expand(top.shape[0], *v.shape[1:])
                continue
            if kept is not None:
                v = torch.cat([kept, v])
            self.values[name] = _take_rows(v, top)

    def _replace(self, log_w: torch.Tensor, index: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        m, (n, b) = self.m, log_w.shape
        top = torch.cat([self.log_w, log_w]).topk(m, dim=0).indices
        in_top = torch.zeros(m + n, b, dtype=torch.bool, device=log_w.device).scatter_(0, top, True)
        entering = in_top[m:]
        count = entering.sum(0)
        k = int(count.max())
        if k == 0:
            return
        # pair each image's entering rows with the slots they free, in order (as many of each)
        slots = (in_top[:m].to(torch.uint8)).sort(dim=0, stable=True).indices[:k]
        rows = ((~entering).to(torch.uint8)).sort(dim=0, stable=True).indices[:k]
        valid = (torch.arange(k, device=log_w.device)[:, None] < count).flatten()
        images = torch.arange(b, device=log_w.device)
        dst, src = (slots * b + images).flatten()[valid], (rows * b + images).flatten()[valid]
        for kept, new in [(self.log_w, log_w), (self.index, index),
                          *((self.values[name], v) for name, v in values.items() if self.values[name].stride(0))]:
            kept.view(m * b, -1).index_copy_(0, dst, new.reshape(n * b, -1).index_select(0, src))


def _take_rows(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``v[rows[i, b], b, …]`` for ``v`` ``(particles, batch, …)`` and ``rows`` ``(m, batch)``: one
    ``index_select`` of whole rows (``take_along_dim`` gathered element by element, several times slower)."""
    p, b = v.shape[:2]
    flat = (rows * b + torch.arange(b, device=rows.device)).flatten()
    return v.reshape(p * b, -1).index_select(0, flat).reshape(rows.shape[0], b, *v.shape[2:])


class WeightedMoments:
    """Streams ``Σ w f``, ``Σ w² f``, ``Σ w² f²`` over particle chunks with a running log-shift.

    ``num_samples``: the run's particles per image, when the weights will be Pareto-smoothed; the readouts
    of the largest weights (as many as PSIS smooths, :func:`~.weights.tail_length`) are then kept.
    """

    def __init__(self, num_samples: Optional[int] = None) -> None:
        self.count = 0
        self.binary = False
        self.tail = None if num_samples is None else _Tail(tail_length(num_samples) + 1)
        self.shift: Optional[torch.Tensor] = None
        self.sums: dict[str, list[torch.Tensor]] = {}
        self.sw = self.sw2 = None

    @staticmethod
    def _per_image(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))

    @staticmethod
    def _chunk_sums(e: Optional[torch.Tensor], v: torch.Tensor, binary: bool) -> list[torch.Tensor]:
        """``[Σ_s w f, Σ_s w² f, Σ_s w² f²]`` of one chunk; ``e=None`` means unit weights."""
        s, b = v.shape[:2]
        if v.stride(0) == 0:           # a per-image readout broadcast over the particles
            f = v[0]
            sw = v.new_full((b,), float(s)) if e is None else e.sum(0)
            sw2 = sw if e is None else (e * e).sum(0)
            sw, sw2 = (WeightedMoments._per_image(t, f) for t in (sw, sw2))
            return [f * sw, f * sw2, f * f * sw2]
        if e is None:
            s1 = v.sum(0)
            return [s1, s1, s1 if binary else (v * v).sum(0)]
        flat = v.reshape(s, b, -1)
        q1 = torch.einsum("sb,sbd->bd", e * e, flat)
        parts = [torch.einsum("sb,sbd->bd", e, flat), q1,
                 q1 if binary else torch.einsum("sb,sbd->bd", e * e, flat * flat)]
        return [p.reshape(v.shape[1:]) for p in parts]

    def update(self, log_w: torch.Tensor, values: dict[str, torch.Tensor], *, equal_weights: bool = False,
               binary: bool = False) -> None:
        """Adds a chunk: log-weights ``(S, B)`` and per-particle values ``(S, B, …)``.

        ``equal_weights``: every ``log_w`` is 0 (ancestral sampling), so no weighting
        pass is needed; ``binary``: the values are 0/1, so ``Σ w² f² = Σ w² f``.
        """
        shift = log_w.max(0).values
        if self.shift is not None:
            shift = torch.maximum(self.shift, shift)
            r = (self.shift - shift).exp()
            self.sw, self.sw2 = self.sw * r, self.sw2 * r * r
            for s1, q1, q2 in self.sums.values():
                rr = self._per_image(r, s1)
                s1.mul_(rr)
                q1.mul_(rr * rr)
                q2.mul_(rr * rr)
        e = (log_w - shift).exp()
        self.sw = e.sum(0) if self.sw is None else self.sw + e.sum(0)
        self.sw2 = (e * e).sum(0) if self.sw2 is None else self.sw2 + (e * e).sum(0)
        for name, v in values.items():
            parts = self._chunk_sums(None if equal_weights else e, v, binary)
            if name in self.sums:
                for acc, p in zip(self.sums[name], parts):
                    acc.add_(p)
            else:
                self.sums[name] = [p.clone() for p in parts]   # the parts may alias one another
        if self.tail is not None:
            self.tail.update(log_w, values, self.count)
        self.shift = shift
        self.count += log_w.shape[0]
        self.binary = binary

    def result(self, smoothed: Optional[torch.Tensor] = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Means, standard errors, ESS ``(B,)`` and ``log mean_s w_s`` ``(B,)``.

        ``smoothed``: the Pareto-smoothed normalised log-weights of all particles ``(S, B)``;
        they differ from the raw ones by one factor ``c`` outside the kept tail, so every
        weighted sum is ``c² · (total − tail, raw) + tail, smoothed`` (in float64).  For 0/1
        values the variance is at least the binomial one at the Laplace-adjusted mean, and a unit on
        (or off) in fewer than :data:`FEW_PARTICLES` effective particles has the largest normalised
        weight's share added to it (one more such particle could carry it).
        """
        sw, sw2 = self.sw.double(), self.sw2.double()
        if smoothed is None or self.tail is None:
            c, tail = torch.ones_like(sw), None
            sum_sq = sw2 / sw ** 2
        else:
            t = self.tail
            raw = ((t.log_w - self.shift).double().exp() / sw)               # (m, B), normalised
            smooth = smoothed.double().gather(0, t.index).exp()
            c = (1 - smooth.sum(0)).clamp_min(0) / (1 - raw.sum(0)).clamp_min(1e-300)
            sum_sq = c ** 2 * (sw2 / sw ** 2 - (raw ** 2).sum(0)) + (smooth ** 2).sum(0)
            tail = (raw, smooth)
        # the largest normalised weight (the kept tail holds it; raw weights are e / Σe with max e = 1)
        w_max = (1 / sw) if tail is None else tail[1].max(0).values
        ess = 1.0 / sum_sq
        # ess/(ess-1): the usual n/(n-1) correction, exact for equal weights
        correction = ess / (ess - 1).clamp_min(1e-12)
        means, stderrs = {}, {}
        for name, (s1, q1, q2) in self.sums.items():
            def per(v: torch.Tensor, like: torch.Tensor = s1) -> torch.Tensor:
                return self._per_image(v, like)

            m1, m2, m3 = s1.double() / per(sw), q1.double() / per(sw ** 2), q2.double() / per(sw ** 2)
            cc = per(c)
            m1, m2, m3 = cc * m1, cc * cc * m2, cc * cc * m3
            if tail is not None:
                f = self.tail.values[name].double()
                rw, sm = (w.reshape(w.shape + (1,) * (f.dim() - 2)) for w in tail)
                m1 = m1 - cc * (rw * f).sum(0) + (sm * f).sum(0)
                m2 = m2 - cc * cc * (rw * rw * f).sum(0) + (sm * sm * f).sum(0)
                m3 = m3 - cc * cc * (rw * rw * f * f).sum(0) + (sm * sm * f * f).sum(0)
            var = m3 - 2 * m1 * m2 + m1 * m1 * per(sum_sq)
            if self.binary:
                # a 0/1 mean seen at 0 or 1 has no sample spread; the binomial variance at the
                # Laplace-adjusted p̃ = (p̂ ESS + 1) / (ESS + 2) keeps its error bar from collapsing
                q = per(sum_sq)
                p_adj = (m1 + q) / (1 + 2 * q)
                # a unit on (or off) in few effective particles, (Σ w̃ f)² / Σ w̃² f: its variance rests on a
                # handful of weights and runs low (|z| 5-10 where the image's ESS was right); one more such
                # particle could carry the largest weight seen, so that is added to the variance
                few = torch.minimum(m1 ** 2 / m2.clamp_min(1e-300),
                                    (1 - m1) ** 2 / (q - m2).clamp_min(1e-300)) < FEW_PARTICLES
                extra = (per(w_max) * torch.maximum(p_adj, 1 - p_adj)) ** 2
                var = torch.maximum(torch.where(few, var + extra, var), p_adj * (1 - p_adj) * q)
            means[name] = m1.to(s1.dtype)
            stderrs[name] = (var.clamp_min(0) * per(correction)).sqrt().to(s1.dtype)
        log_mean_w = self.shift + (self.sw / self.count).log()
        return means, stderrs, ess.to(self.sw.dtype), log_mean_w
