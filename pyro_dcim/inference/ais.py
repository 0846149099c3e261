"""Annealed importance sampling (Neal 2001) of ``log p(x^0 | y)`` under the reverse model
(bidirectional Monte Carlo, which sandwiches it on simulated data, is :mod:`.bdmc`).

The reverse model is a sigmoid belief net ``p(x^0, h | y) = p(x^{n-1} | y) Π_k p(x^{k-1} | x^k)``
over the hidden layers ``h = (x^1 … x^{n-1})``.  AIS moves ``h`` through unnormalised targets
``f_β`` for temperatures ``0 = β_0 < … < β_T = 1``:

* ``start="prior"``:   ``f_β(h) = p(h | y) · p(x^0 | x^1)^β`` — ``f_0`` is the reverse chain's own
  prior, drawn ancestrally;
* ``start="forward"``: ``f_β(h) = q(h | x^0)^{1−β} · p(x^0, h | y)^β`` — ``f_0`` is the forward
  chain ``q(h | x^0) = Π_k p(x^k | x^{k-1})`` (eq. 13, the same tied weights), drawn ancestrally.

Both ``f_0`` are normalised and ``f_1 = p(x^0, h | y)``.  Each chain starts from ``f_0``,
adds ``log f_{β_t}(h) − log f_{β_{t-1}}(h)`` to its log-weight and then takes one Gibbs sweep
that leaves ``f_{β_t}`` invariant (:class:`~pyro_dcim.inference.energy.ChainEnergy`, the
kernel of :class:`~pyro_dcim.inference.DCIMGibbs` with tempered weights).  ``E[w] = p(x^0 | y)``,
so ``log mean_chains w`` is a stochastic lower bound.  Run backwards (β from 1 to 0) from an
exact posterior sample, the same loop gives an unbiased estimate of ``1 / p(x^0 | y)``: that is
BDMC's stochastic upper bound, on data simulated from the model where the sample is known.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import torch

from ..chain import Chain
from ..fingerprint import tensor_digest
from ..pyro_models import hidden_site
from ..safe_load import CheckpointError, safe_load
from ..validation import check_binary
from .energy import ChainEnergy
from .weights import (
    MIN_SAMPLES_FOR_KHAT,
    UnreliableEstimateWarning,
    _caller_stacklevel,
    log_mean_exp,
    weight_diagnostics,
)

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["AISResult", "MarginalResult", "ais_log_likelihood", "ais_log_marginal", "annealing_schedule",
           "STARTS", "SCHEDULES"]

STARTS = ("prior", "forward")
SCHEDULES = ("sigmoid", "linear")
#: Elements of the widest ``(chains, images, units)`` tensor of one chunk of images.
CHUNK_ELEMENTS = 2 ** 22


@dataclass
class AISResult:
    """AIS estimates of ``log p(x^0 | y)`` per image, in nats.

    ``estimate``: ``log mean_c w_c`` (a stochastic lower bound; for a reverse run, BDMC's upper
    bound ``−log mean_c w_c``), ``(batch,)``; ``stderr``: its Monte Carlo standard error from the
    Pareto-smoothed weights; ``log_weights``: ``(chains, batch)``; ``ess``: effective number of
    chains; ``khat``: Pareto k̂ of the weights (NaN with fewer than 21 chains, too few for a
    tail fit); ``reliable``: ``k̂ ≤ 0.7`` (False where k̂ is NaN: an error bar that cannot be
    checked is not trusted, and one warning says so; BDMC is the check); ``seconds``: wall time.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    reliable: torch.Tensor
    seconds: float
    num_steps: int
    start: str
    direction: str = "forward"
    betas: Optional[torch.Tensor] = field(default=None, repr=False)


def annealing_schedule(name: Union[str, torch.Tensor], num_steps: int, *, dtype: torch.dtype = torch.float64
             ) -> torch.Tensor:
    """Temperatures ``β_0 = 0 < … < β_T = 1`` (``T = num_steps``).

    ``"sigmoid"``: ``σ(δ(2t/T − 1))`` rescaled to [0, 1] with ``δ = 4`` (Grosse et al. 2015), denser
    near both ends; ``"linear"``: equal steps; a tensor: used as given (checked).
    """
    if isinstance(name, torch.Tensor):
        betas = name.to(dtype).flatten()
        if betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() < 0).any():
            raise ValueError("a schedule tensor must rise monotonically from 0 to 1 (at least two temperatures)")
        return betas
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=dtype)
    if name == "linear":
        return t
    if name == "sigmoid":
        s = torch.sigmoid(4.0 * (2 * t - 1))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"schedule must be one of {SCHEDULES} or a tensor of temperatures, got {name!r}")


def _weights(start: str, beta: float) -> dict[str, float]:
    if start == "prior":
        return {"reverse": 1.0, "reverse_end": beta}
    return {"forward": 1.0 - beta, "reverse": beta, "reverse_end": beta}


def _increment(energy: ChainEnergy, start: str, bits: dict[int, torch.Tensor]) -> torch.Tensor:
    """``d log f_β / dβ`` at ``h``: ``log p(x^0 | x^1)`` (prior start) or ``log p(x^0, h | y) − log q(h | x^0)``."""
    if start == "prior":
        return energy.terms(bits, ("reverse_end",))["reverse_end"]
    t = energy.terms(bits, ("forward", "reverse", "reverse_end"))
    return t["reverse"] + t["reverse_end"] - t["forward"]


@torch.no_grad()
def _draw_start(net: "DCIM", start: str, x0: torch.Tensor, y: torch.Tensor, chains: int) -> dict[int, torch.Tensor]:
    """Ancestral draws of ``f_0``: the reverse chain from ``y`` or the forward chain from ``x^0``."""
    chain = Chain(net, "reverse" if start == "prior" else "forward")
    return chain.sample(chain.start_state(x0, y), chains)


@torch.no_grad()
def _anneal(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, betas: torch.Tensor, start: str,
            bits: dict[int, torch.Tensor], progress, *, first: int = 1, log_w: Optional[torch.Tensor] = None,
            save: Optional[Callable[[int, dict[int, torch.Tensor], torch.Tensor], None]] = None,
            every: int = 0) -> torch.Tensor:
    """The AIS loop over ``betas`` (rising or falling) from ``bits ~ f_{betas[first-1]}``; log-weights
    ``(C, B)``.  ``save(t, bits, log_w)`` is called every ``every`` temperatures with the state
    from which ``first = t + 1`` resumes."""
    energy = ChainEnergy(net, x0, y)
    if log_w is None:
        log_w = torch.zeros(next(iter(bits.values())).shape[:2], dtype=torch.float64, device=x0.device)
    for t in range(first, len(betas)):
        step = float(betas[t] - betas[t - 1])
        if step:
            log_w += step * _increment(energy, start, bits).double()
        if t < len(betas) - 1:
            energy.sweep(bits, _weights(start, float(betas[t])))
            if save is not None and every and t % every == 0:
                save(t, bits, log_w)
        if progress is not None:
            progress.update(1)
    return log_w


class _Checkpoint:
    """A long AIS run's state on disk: finished chunks' log-weights, and the current chunk's chains,
    log-weights and temperature index.  Written atomically; removed when the run completes."""

    def __init__(self, path: Union[str, os.PathLike], key: dict) -> None:
        self.path, self.key = Path(path), key
        self.state: dict = {"key": key, "parts": [], "chunk": 0, "t": 0, "seconds": 0.0}
        if self.path.is_file():
            state = safe_load(self.path, what="AIS checkpoint")     # plain data: tensors, dicts, numbers
            if not isinstance(state, dict):
                raise CheckpointError(f"{self.path}: not an AIS checkpoint")
            if state.get("key") != key:
                raise ValueError(f"checkpoint {self.path} was written by an AIS run with other settings "
                                 f"({_key_difference(state.get('key') or {}, key)}); remove it or pass another path")
            self.state = state

    def write(self, **changes) -> None:
        self.state.update(changes, rng=torch.get_rng_state())
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(self.state, tmp)
        os.replace(tmp, self.path)

    def restore_rng(self) -> None:
        if "rng" in self.state:
            torch.set_rng_state(self.state["rng"])


def _key_difference(old: dict, new: dict) -> str:
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in new if old.get(k) != new[k]) or "?"


def _run_key(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, betas: torch.Tensor, num_chains: int, start: str,
             direction: str, chunks: list[slice]) -> dict:
    """What a resumed run must share with the one that wrote the checkpoint."""
    digest = tensor_digest((x0, y, betas, *net.parameters()))
    return dict(num_steps=len(betas) - 1, num_chains=num_chains, start=start, direction=direction,
                images=x0.shape[0], chunks=[(c.start, c.stop) for c in chunks], data_and_net=digest)


def _check(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, num_steps: int, num_chains: int, start: str) -> None:
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be at least 1, got {num_chains}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if net.num_layers < 2:
        raise ValueError("the net has no hidden layers: log p(x0 | y) is exact, use exact_log_likelihood")
    Chain(net, "reverse").check(x0, y)
    check_binary(x0, "a likelihood")


def _chunk_images(net: "DCIM", batch: int, chains: int, chunk_size: Optional[int]) -> list[slice]:
    widest = max(math.prod(s) for s in net.shapes)
    size = chunk_size or max(1, CHUNK_ELEMENTS // (chains * widest))
    return [slice(i, min(i + size, batch)) for i in range(0, batch, size)]


def _result(log_w: torch.Tensor, seconds: float, num_steps: int, start: str, direction: str,
            betas: torch.Tensor, what: str) -> AISResult:
    few = log_w.shape[0] < MIN_SAMPLES_FOR_KHAT
    diag = weight_diagnostics(log_w, what=what, warn=direction == "forward" and not few)
    reliable = diag.reliable & ~diag.khat.isnan()     # an error bar that cannot be checked is not trusted
    if few and direction == "forward":
        warnings.warn(f"{what}: with {log_w.shape[0]} chains Pareto k̂ cannot be computed (needs >= "
                      f"{MIN_SAMPLES_FOR_KHAT}), so the error bar cannot be checked (.reliable is False): use "
                      f"more chains, and more temperatures until bdmc() measures a small gap",
                      UnreliableEstimateWarning, stacklevel=_caller_stacklevel())
    sign = 1.0 if direction == "forward" else -1.0
    return AISResult(sign * log_mean_exp(log_w), diag.stderr, log_w, diag.ess, diag.khat, reliable,
                     seconds, num_steps, start, direction, betas)


def ais_log_likelihood(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, num_steps: int = 1000,
                       num_chains: int = 16, *, start: str = "forward",
                       schedule: Union[str, torch.Tensor] = "sigmoid", chunk_size: Optional[int] = None,
                       progress: bool = False, initial_state: Optional[dict[str, torch.Tensor]] = None,
                       checkpoint: Optional[Union[str, os.PathLike]] = None, checkpoint_every: int = 100
                       ) -> AISResult:
    """AIS estimate of ``log p(x^0 | y)`` (nats per image) of the reverse model, eq. (17).

    ``x0``: binary images ``(batch, *input_shape)``; ``y``: classes ``(batch,)``.
    ``num_steps`` temperatures (each one Gibbs sweep per chain), ``num_chains`` independent chains
    per image, all images × chains in one batch (chunks of ``chunk_size`` images).  ``start``:
    ``"forward"`` (default: from the forward chain ``q(h | x^0)``, much closer to the posterior
    than the prior on trained nets) or ``"prior"``.  ``schedule``: ``"sigmoid"``, ``"linear"`` or
    a tensor of temperatures from 0 to 1.  With ``initial_state`` (``{"x1": bits (chains, batch,
    *shape)}``, an exact posterior sample), AIS runs backwards from β = 1 to 0 and the estimate
    is BDMC's stochastic upper bound (see :func:`bdmc`).

    ``checkpoint``: a file that makes a long run resumable.  Every ``checkpoint_every``
    temperatures the chains, their log-weights and the random state are written there; calling
    again with the same arguments resumes from it (another net, other images or settings are
    refused), and the file is removed when the run completes.  ``.seconds`` then counts every
    part of the run.
    """
    _check(net, x0, y, num_steps, num_chains, start)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    betas = annealing_schedule(schedule, num_steps)
    direction = "forward" if initial_state is None else "reverse"
    if direction == "reverse":
        betas = betas.flip(0)
    chunks = _chunk_images(net, x0.shape[0], num_chains, chunk_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=(len(betas) - 1) * len(chunks), desc=f"AIS ({direction})", unit="β", leave=False)
    began = time.perf_counter()
    ckpt = None if checkpoint is None else _Checkpoint(
        checkpoint, _run_key(net, x0, y, betas, num_chains, start, direction, chunks))
    state = ckpt.state if ckpt is not None else {"parts": [], "chunk": 0, "t": 0, "seconds": 0.0}
    parts = [p.to(x0.device) for p in state["parts"]]
    earlier = state["seconds"]                    # spent by the runs that wrote the checkpoint
    if ckpt is not None:
        ckpt.restore_rng()
    try:
        for i, rows in enumerate(chunks):
            if i < len(parts):
                continue
            xs, ys = x0[rows], y[rows]
            first, log_w = 1, None
            if i == state["chunk"] and state["t"]:            # resume inside this chunk
                bits = {k: v.to(x0.device) for k, v in state["bits"].items()}
                log_w, first = state["log_w"].to(x0.device), state["t"] + 1
                if bar is not None:
                    bar.update(state["t"])
            elif initial_state is None:
                bits = _draw_start(net, start, xs, ys, num_chains)
            else:
                bits = {k: initial_state[hidden_site(k)][:, rows].flatten(2).clone().to(x0.dtype)
                        for k in range(1, net.num_layers)}
            save = None
            if ckpt is not None:
                def save(t, b, lw, i=i):
                    ckpt.write(parts=parts, chunk=i, t=t, bits=b, log_w=lw,
                               seconds=earlier + time.perf_counter() - began)
            parts.append(_anneal(net, xs, ys, betas, start, bits, bar, first=first, log_w=log_w, save=save,
                                 every=checkpoint_every))
            if ckpt is not None and i < len(chunks) - 1:
                ckpt.write(parts=parts, chunk=i + 1, t=0, bits=None, log_w=None,
                           seconds=earlier + time.perf_counter() - began)
    finally:
        if bar is not None:
            bar.close()
    seconds = earlier + time.perf_counter() - began
    if ckpt is not None:
        ckpt.path.unlink(missing_ok=True)
    what = "AIS log p(x0 | y)" if direction == "forward" else "reverse AIS (BDMC upper bound)"
    return _result(torch.cat(parts, 1), seconds, len(betas) - 1, start, direction,
                   betas if direction == "forward" else betas.flip(0), what)


@dataclass
class MarginalResult:
    """``log p(x^0) = logsumexp_y [log p(x^0 | y) + log p(y)]`` per image, with its pieces."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    per_class: torch.Tensor          # (batch, classes): log p(x^0 | y) for every class
    per_class_stderr: torch.Tensor
    class_prior: torch.Tensor
    reliable: torch.Tensor
    seconds: float


def ais_log_marginal(net: "DCIM", x0: torch.Tensor, num_steps: int = 1000, num_chains: int = 16, *,
                     class_prior: Optional[torch.Tensor] = None, **kwargs) -> MarginalResult:
    """Unconditional ``log p(x^0)`` by AIS for every class: ``logsumexp_y [log p(x^0 | y) + log p(y)]``.

    ``class_prior``: ``p(y)``, ``(classes,)`` (e.g. the training class frequencies); uniform when
    ``None``.  Costs one AIS run per class.  The standard error is the delta method's over classes.
    """
    c = net.num_classes
    prior = torch.full((c,), 1.0 / c, dtype=torch.float64) if class_prior is None else \
        torch.as_tensor(class_prior, dtype=torch.float64).flatten()
    if prior.numel() != c or (prior < 0).any() or abs(float(prior.sum()) - 1) > 1e-6:
        raise ValueError(f"class_prior must be {c} probabilities summing to 1")
    b = x0.shape[0]
    xs = x0.repeat(c, *([1] * (x0.dim() - 1)))
    ys = torch.arange(c, device=x0.device).repeat_interleave(b)
    res = ais_log_likelihood(net, xs, ys, num_steps, num_chains, **kwargs)
    per_class = res.estimate.reshape(c, b).T
    per_se = res.stderr.reshape(c, b).T
    joint = per_class + prior.log().to(per_class)
    estimate = joint.logsumexp(1)
    share = (joint - estimate[:, None]).exp()       # each class's share of p(x^0)
    stderr = (share.pow(2) * per_se.pow(2)).sum(1).sqrt()
    reliable = res.reliable.reshape(c, b).T.all(1)
    return MarginalResult(estimate, stderr, per_class, per_se, prior, reliable, res.seconds)
