"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): AIS sandwiched on data simulated from the model.

On ``(y, h, x^0)`` drawn ancestrally from the reverse chain, ``h`` is an exact sample of the posterior
``p(h | x^0, y)``.  Forward AIS (:func:`~.ais.ais_log_likelihood`) gives a stochastic lower bound on
``log p(x^0 | y)``; the same AIS run backwards from ``h`` gives a stochastic upper bound.  Their gap
bounds the error AIS still has at that number of temperatures on digits like the simulated ones.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch

from ..chain import Chain
from ..pyro_models import hidden_site
from ..safe_load import CheckpointError, safe_load
from .ais import AISResult, ais_log_likelihood
from .weights import UnreliableEstimateWarning

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["BDMCResult", "bdmc", "simulate"]


@dataclass
class BDMCResult:
    """A BDMC sandwich on simulated data: ``lower ≤ log p(x^0 | y) ≤ upper`` per image (stochastically).

    ``x0``, ``y``: the simulated images and classes; ``forward``/``reverse``: the two AIS runs.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    x0: torch.Tensor
    y: torch.Tensor
    forward: AISResult
    reverse: AISResult
    seconds: float

    @property
    def gap(self) -> torch.Tensor:
        """``upper − lower`` per image, nats."""
        return self.upper - self.lower


@torch.no_grad()
def simulate(net: "DCIM", num_images: int, *, class_prior: Optional[torch.Tensor] = None,
             seed: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(x0, y, h)`` drawn ancestrally from the reverse model: ``y ~ p(y)``, ``h ~ p(h | y)``,
    ``x^0 ~ p(x^0 | x^1)``; ``h`` is then an exact sample of ``p(h | x^0, y)``."""
    gen = torch.Generator(device=net.input_bias.device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    prior = net.class_prior_probs().cpu().float() if class_prior is None else \
        torch.as_tensor(class_prior, dtype=torch.float)
    y = torch.multinomial(prior, num_images, replacement=True, generator=gen).to(net.input_bias.device)
    chain = Chain(net, "reverse")
    bits = chain.sample(chain.start_state(None, y), 1, gen)
    h = {hidden_site(k): b[0].reshape(num_images, *net.shapes[k]) for k, b in bits.items()}
    p0 = torch.sigmoid(net.conditional_logits(0, net.units.state(h[hidden_site(1)]), "reverse"))
    x0 = torch.bernoulli(p0, generator=gen)
    return x0, y, h


def forward_done(x0: torch.Tensor, y: torch.Tensor, num_steps: int, start: str, result: AISResult,
                 rng: Optional[torch.Tensor] = None) -> dict:
    """The finished forward run as plain data (its :class:`AISResult` as a dict), so that the
    ``PREFIX.forward-done`` file loads with ``weights_only=True``; ``rng``: the torch state (now's)."""
    return dict(x0=x0.cpu(), y=y.cpu(), num_steps=num_steps, start=start, result=dataclasses.asdict(result),
                rng=torch.get_rng_state() if rng is None else rng)


def bdmc(net: "DCIM", num_images: int = 10, num_steps: int = 1000, num_chains: int = 16, *,
         start: str = "forward", schedule: Union[str, torch.Tensor] = "sigmoid", seed: Optional[int] = 0,
         class_prior: Optional[torch.Tensor] = None, progress: bool = False,
         chunk_size: Optional[int] = None, checkpoint: Optional[Union[str, os.PathLike]] = None,
         checkpoint_every: int = 100) -> BDMCResult:
    """Bidirectional Monte Carlo on ``num_images`` digits simulated from the reverse model.

    Forward AIS gives a stochastic lower bound on ``log p(x^0 | y)``, AIS run backwards from the
    simulated (exact posterior) hidden state a stochastic upper bound; their gap bounds the
    error of AIS at this ``num_steps``, ``start`` and ``schedule`` on data like the simulated.

    ``checkpoint``: a path prefix that makes a long run resumable (``seed`` must then be fixed): each
    direction checkpoints as :func:`ais_log_likelihood` does (``PREFIX.forward``, ``PREFIX.reverse``), and
    the finished forward run waits in ``PREFIX.forward-done`` until the reverse one completes.  ``.seconds``
    is the AIS time of both directions, across resumptions.
    """
    if checkpoint is not None and seed is None:
        raise ValueError("a resumable BDMC run needs a fixed seed: the simulated digits must be the same again")
    x0, y, h = simulate(net, num_images, class_prior=class_prior, seed=seed)
    kw = dict(start=start, schedule=schedule, chunk_size=chunk_size, progress=progress,
              checkpoint_every=checkpoint_every)
    done = None if checkpoint is None else Path(f"{checkpoint}.forward-done")
    fwd = None
    if done is not None and done.is_file():
        saved = safe_load(done, what="BDMC forward-done file")
        try:  # plain data, but a foreign file may still lack a piece or hold the wrong types
            fwd, rng = AISResult(**saved["result"]), saved["rng"]
            same = (torch.equal(saved["x0"], x0.cpu()) and torch.equal(saved["y"], y.cpu())
                    and saved["num_steps"] == num_steps and saved["start"] == start
                    and fwd.log_weights.shape[0] == num_chains)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"{done}: not a BDMC forward-done file ({type(e).__name__}: {e})") from None
        if not same:
            raise ValueError(f"{done} was written by a BDMC run with other digits or settings; remove it or pass "
                             "another checkpoint")
        torch.set_rng_state(rng)                # the reverse run draws as it would have, unbroken
    if fwd is None:
        with warnings.catch_warnings():   # BDMC is itself the check of the forward run's error bar
            warnings.simplefilter("ignore", UnreliableEstimateWarning)
            fwd = ais_log_likelihood(net, x0, y, num_steps, num_chains,
                                     checkpoint=None if checkpoint is None else f"{checkpoint}.forward", **kw)
        if done is not None:
            tmp = done.with_name(done.name + ".tmp")
            torch.save(forward_done(x0, y, num_steps, start, fwd), tmp)
            os.replace(tmp, done)
    init = {name: v.expand(num_chains, *v.shape) for name, v in h.items()}
    rev = ais_log_likelihood(net, x0, y, num_steps, num_chains, initial_state=init,
                             checkpoint=None if checkpoint is None else f"{checkpoint}.reverse", **kw)
    if done is not None:
        done.unlink(missing_ok=True)
    return BDMCResult(fwd.estimate, rev.estimate, x0, y, fwd, rev, fwd.seconds + rev.seconds)
