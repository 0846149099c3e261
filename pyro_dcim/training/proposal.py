"""An evaluation proposal: a recognition chain fitted to a trained generator's posterior.

The IS-K likelihood (:mod:`pyro_dcim.inference.importance_weighted`) is only as tight as its
proposal ``q(h | x^0)``.  A run's own forward chain may be a poor one: ``--objective generative``
trains it mostly as a classifier (wake-φ 0.01), and its IS-5000 estimate sits nats above AIS.  Here
a copy of the run's forward chain is trained for evaluation only, the generator frozen, by the
reweighted wake-φ update (Bornschein & Bengio 2015, DESIGN.md §8),

    ∇φ  Σ_s w̃_s log q_φ(h_s | x^0),   h_s ~ q_φ,   w̃_s ∝ p(x^0, h_s | y) / q_φ(h_s | x^0),

plus, with ``sleep_weight``, sleep-φ on dreams of the generator, ``∇φ log q_φ(h̃ | x̃^0)``.  The
generator's parameters are not touched, so the likelihood measured is the run's; only the
estimator's variance and bias change.  Checkpointed every epoch: an interrupted fit resumes.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..inference.importance_weighted import forward_draw, forward_log_prob, reverse_log_joint
from ..model import DCIM
from ..objectives import sleep_dreams
from .checkpoint import Architecture, CheckpointError, load_checkpoint, load_parameters, model_state, save_checkpoint

__all__ = ["fit_proposal", "proposal_loss", "load_proposal", "PROPOSAL_NAME"]

PROPOSAL_NAME = "proposal.pt"


def proposal_loss(q: DCIM, net: DCIM, x0: torch.Tensor, y: torch.Tensor, particles: int = 10,
                  sleep_weight: float = 0.0, generator: Optional[torch.Generator] = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Wake-φ (and sleep-φ) loss of the proposal ``q`` for the frozen generator ``net``.

    Returns ``(loss, bound)``: ``bound`` is the K-sample bound ``log mean_s w_s`` per image, detached
    (its mean rises as ``q`` nears the posterior).
    """
    with torch.no_grad():
        drawn = forward_draw(q, x0, particles, generator)
        bits = drawn.bits
        log_p = reverse_log_joint(net, bits, x0, drawn)
        log_p = log_p.gather(-1, y.view(1, -1, 1).expand(particles, -1, 1)).squeeze(-1)
    log_q = forward_log_prob(q, x0, bits)
    log_w = (log_p - log_q).detach()
    loss = -(torch.softmax(log_w, 0) * log_q).sum(0).mean()
    if sleep_weight:
        dx, _, dh = sleep_dreams(net, len(x0), generator=generator)
        dream = {k: v.reshape(1, len(x0), *net.shapes[k]) for k, v in dh.items()}
        loss = loss - sleep_weight * forward_log_prob(q, dx, dream).mean()
    return loss, log_w.logsumexp(0) - math.log(particles)


def load_proposal(path: Path, net: DCIM) -> DCIM:
    """The fitted proposal stored at ``path`` (safe loading), checked to fit ``net``'s architecture."""
    return _from_state(load_checkpoint(path)["model"], net, path)


def _from_state(state: dict, net: DCIM, path: Path) -> DCIM:
    # a copy of ``net`` (its dtype and device) holding the stored parameters, bit for bit
    if Architecture.stored(state) != Architecture.of(net):
        raise CheckpointError(f"{path} is a proposal for another architecture than this run's")
    return load_parameters(copy.deepcopy(net), state).requires_grad_(True)


def fit_proposal(net: DCIM, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10, particles: int = 10,
                 batch_size: int = 128, lr: float = 1e-3, sleep_weight: float = 0.0, seed: int = 0,
                 checkpoint: Optional[Path] = None, log: Callable[[str], None] = print) -> DCIM:
    """Fit a proposal for ``net`` on training images ``x`` (intensities: binarised afresh each epoch).

    Starts from ``net``'s own forward chain.  With ``checkpoint``, every epoch is saved there and a
    later call with the same file resumes (a finished fit is loaded and returned at once).
    """
    state = load_checkpoint(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None
    q = copy.deepcopy(net).requires_grad_(True) if state is None else _from_state(state["model"], net, checkpoint)
    net = net.requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    g = torch.Generator(device=x.device)
    for epoch in range(start, epochs):
        g.manual_seed(seed * 1_000_003 + epoch)       # an epoch's draws: the same after a resume
        began, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(x), generator=g, device=x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb = torch.rand(x[idx].shape, generator=g, device=x.device, dtype=x.dtype).lt_(x[idx]).to(x.dtype)
            loss, bound = proposal_loss(q, net, xb, y[idx], particles, sleep_weight, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(bound.sum()), seen + len(idx)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model_state(q), "optimizer": opt.state_dict(), "epoch": epoch + 1})
        log(f"proposal epoch {epoch + 1}/{epochs}: K={particles} bound -log p(x0 | y) <= {-total / seen:.2f} nats "
            f"(training digits), {time.perf_counter() - began:.0f} s")
    net.requires_grad_(True)
    return q.requires_grad_(False).eval()
