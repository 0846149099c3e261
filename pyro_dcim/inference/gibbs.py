"""Gibbs sampling of the hidden posterior ``p(x^1..x^{n-1} | x^0, x^n)`` under ``pyro.infer.MCMC``.

Each binary unit is resampled from its exact conditional given its Markov blanket,

    logit p(x^k_i = 1 | rest) = l^k_i + Σ_{j ∈ child} [log p(x^c_j | a^c + (1 − x_i) δ W_{ji})
                                                     − log p(x^c_j | a^c − x_i δ W_{ji})],

``l^k`` the layer's own logit given its parent (eq. 6 forward, eq. 18 reverse), ``a^c``
the child's pre-activation, ``δ`` the state step of one bit.  Units sharing no child are
updated together (:mod:`.blanket`); layers of equal parity are conditionally independent
given the others, so a sweep updates the odd layers, then the even ones, computing each
layer's parent logits and child pre-activations once (one product per layer) and then
updating the child pre-activations by one column of ``W`` per flip.

Chains and images form one batch ``(chains, images, …)`` inside a single kernel, since
Pyro's ``num_chains > 1`` forks a process per chain.  States are float 0/1 bits.  As with
Pyro's own kernels, the kernel is built from the model and gets its data from ``run``::

    mcmc = MCMC(DCIMGibbs(net, num_chains=4), num_samples=500, warmup_steps=200)
    mcmc.run(x0, y)
    mcmc.get_samples(group_by_chain=True)["x1"]     # (4, 500, batch, *shape_1)
    mcmc.summary()                                  # cross-chain R-hat per unit
    az.from_pyro(mcmc)                              # ArviZ's chain dimension = the kernel's chains

The per-layer conditionals come from :mod:`.energy` (the one sweep shared with AIS).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import pyro
import torch
from pyro.infer import MCMC
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ..chain import Chain
from ..pyro_models import hidden_site
from ..validation import as_labels, check_binary, check_class_batch
from . import diagnostics
from .energy import ChainEnergy, posterior_weights
from .marginals import Marginals
from .mean_field import mean_field_marginals

if TYPE_CHECKING:
    import arviz

    from ..model import DCIM

__all__ = ["DCIMGibbs", "gibbs_posterior", "INITS"]

INITS = ("prior", "mean_field", "uniform")


class _ChainsFirst:
    """MCMC's "transform" of the kernel's draws ``(1, draws, chains, …)`` to ``(chains, draws, …)``."""

    @staticmethod
    def inv(z: torch.Tensor) -> torch.Tensor:
        return z.squeeze(0).movedim(1, 0)


class DCIMGibbs(MCMCKernel):
    """Blocked Gibbs kernel for the hidden layers of a DCIM, with ``x^0`` and ``x^n = y`` clamped.

    ``x0``: ``(batch, *input_shape)``; ``y``: ``(batch,)`` class indices; ``num_chains``
    chains per image run as a batch dimension.  ``direction`` picks the forward chain
    (eq. 13) or the reverse chain (eq. 17) as the joint.  ``init``: ``"prior"`` (a draw of
    that chain ignoring the far end), ``"mean_field"`` (independent bits from the
    mean-field marginals) or ``"uniform"``.  Parameters are ``{"x1": (chains, batch,
    *shape_1), …}``.  With ``record_conditionals`` the kernel keeps, per post-warmup
    sweep, each unit's conditional ``p(x^k_i = 1 | rest)`` (a Rao-Blackwellised draw).
    """

    def __init__(self, net: "DCIM", x0: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
                 num_chains: int = 4, *, direction: str = "forward", init: str = "prior",
                 record_conditionals: bool = True) -> None:
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if isinstance(x0, int) and y is None:     # DCIMGibbs(net, 4): the chains given positionally
            x0, num_chains = None, x0
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
        self.chain = Chain(net, direction)
        if not self.chain.hidden:
            raise ValueError("the net has no hidden layers: there is nothing to sample")
        self.net, self.direction = net, direction
        self.num_chains, self.init = num_chains, init
        self.record_conditionals = record_conditionals
        sites = [hidden_site(k) for k in self.chain.hidden]
        # MCMC sees one chain whose draws hold all `num_chains`; this moves them to its chain dimension,
        # so mcmc.get_samples(group_by_chain=True), mcmc.summary() and az.from_pyro see every chain
        self.transforms: dict = {name: _ChainsFirst() for name in sites}
        self.weights = posterior_weights(direction)
        self._initial_params: Optional[dict[str, torch.Tensor]] = None
        self._given_params = False   # set through initial_params (e.g. by MCMC(kernel, initial_params=...))
        self.conditionals: list[dict[str, torch.Tensor]] = []
        self.warmup_steps = 0
        self.sweeps = 0
        self.x0 = self.y = None
        if x0 is not None or y is not None:
            self._set_data(x0, y)

    def _set_data(self, x0: torch.Tensor, y: torch.Tensor) -> None:
        if x0 is None or y is None:
            raise ValueError("DCIMGibbs needs the image x0 and the class y: MCMC(kernel, ...).run(x0, y)")
        y = as_labels(y, self.net.input_bias.device)
        # MCMC.run turns Pyro's validation off, but a label out of range or a grey pixel must still be an
        # error here (once per run), not an index error in a sweep or a silently wrong posterior
        with pyro.validation_enabled(True):
            self.chain.check(x0, y)
        check_class_batch(y, x0, self.net.input_shape)
        check_binary(x0, "Gibbs sampling of the hidden posterior")
        self.x0, self.y = x0, y
        self.energy = ChainEnergy(self.net, x0, y)

    def _same_data(self, x0: torch.Tensor, y: torch.Tensor) -> bool:
        """Equal by value: MCMC.run passes detached copies, so identity says nothing."""
        return all(isinstance(new, torch.Tensor) and old is not None and new.shape == old.shape
                   and new.device == old.device and torch.equal(new, old) for new, old in ((x0, self.x0), (y, self.y)))

    def model(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The Pyro model whose posterior the kernel samples (``run``'s arguments: ``x0, y``); ArviZ's
        ``from_pyro`` reads the observations from it."""
        if self.direction == "forward":
            return self.net.forward_model(x0, y)
        return self.net.reverse_model(y, x0)

    # -- MCMCKernel interface ------------------------------------------------------------
    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """``MCMC(kernel, ...).run(x0, y)`` passes the data here (Pyro's convention); data given to
        the constructor is used when ``run()`` gets none."""
        if args or kwargs:
            x0, y = (list(args) + [None, None])[:2]
            x0, y = kwargs.get("x0", x0), kwargs.get("y", y)
            if not self._given_params and not self._same_data(x0, y):
                self._initial_params = None   # a start drawn for other data does not fit these
            self._set_data(x0, y)
        elif self.x0 is None:
            raise ValueError("DCIMGibbs has no data: give it as MCMC(kernel, ...).run(x0, y)")
        self.warmup_steps, self.sweeps, self.conditionals = warmup_steps, 0, []
        # weights may have changed since construction: colourings are rebuilt per run
        self.energy = ChainEnergy(self.net, self.x0, self.y)
        if self._initial_params is None:
            self._initial_params = self._initial_state()
        else:
            self._check_params(self._initial_params)
        self._given_params = False   # used once: a later run with other data draws its own start

    def diagnostics(self) -> dict:
        return {"divergences": []}    # a Gibbs sampler has none; ArviZ's from_pyro asks

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        """The chains' start, ``{"x1": bits (chains, batch, *shape_1), …}``; kept by the next run (checked there)."""
        self._initial_params, self._given_params = params, params is not None

    def _check_params(self, params: dict[str, torch.Tensor]) -> None:
        for k in self.chain.hidden:
            name, shape = hidden_site(k), (*self._lead(), *self.net.shapes[k])
            value = params.get(name) if isinstance(params, dict) else None
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"initial_params[{name!r}] must be bits shaped (chains, batch, *shape) = {shape}, "
                                 f"got {got}")
            if bool(((value != 0) & (value != 1)).any()):
                raise ValueError(f"initial_params[{name!r}] must hold bits 0/1 (states are bits in either "
                                 "unit encoding)")

    def logging(self) -> dict:
        return {"sweeps": self.sweeps}

    @torch.no_grad()
    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One sweep: odd hidden layers, then even ones; returns new bits ``(chains, batch, *shape)``."""
        lead = self._lead()
        bits = {k: params[hidden_site(k)].reshape(*lead, -1).clone() for k in self.chain.hidden}
        probs = {k: torch.empty_like(b) for k, b in bits.items()}
        self.energy.sweep(bits, self.weights, probs)
        self.sweeps += 1
        if self.record_conditionals and self.sweeps > self.warmup_steps:
            self.conditionals.append({hidden_site(k): self._shaped(k, p) for k, p in probs.items()})
        return {hidden_site(k): self._shaped(k, b) for k, b in bits.items()}

    # -- helpers ----------------------------------------------------------------------------
    def _lead(self) -> tuple[int, int]:
        return (self.num_chains, self.y.shape[0])

    def _shaped(self, k: int, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*self._lead(), *self.net.shapes[k])

    def _initial_state(self) -> dict[str, torch.Tensor]:
        lead, dtype = self._lead(), self.net.input_bias.dtype
        if self.init == "mean_field":
            mf = mean_field_marginals(self.net, self.x0, y=self.y, direction=self.chain.direction)
            return {hidden_site(k): torch.bernoulli(p.expand(*lead[:1], *p.shape)) for k, p in
                    zip(self.chain.hidden, mf.hidden)}
        if self.init == "uniform":
            return {hidden_site(k): torch.bernoulli(torch.full((*lead, *self.net.shapes[k]), 0.5, dtype=dtype,
                                                               device=self.net.input_bias.device))
                    for k in self.chain.hidden}
        # an ancestral draw of the chain, the far end left free
        bits = self.chain.sample(self.chain.start_state(self.x0, self.y), lead[0])
        return {hidden_site(k): self._shaped(k, b) for k, b in bits.items()}

    def conditional_draws(self) -> dict[str, torch.Tensor]:
        """Recorded conditionals as ``{site: (chains, draws, batch, *shape)}``."""
        if not self.conditionals:
            return {}
        return {name: torch.stack([c[name] for c in self.conditionals], 1) for name in self.conditionals[0]}


def gibbs_posterior(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, num_samples: int = 500,
                    warmup_steps: int = 200, num_chains: int = 4, *, direction: str = "forward",
                    init: str = "prior", progress: bool = False,
                    num_threads: Optional[int] = None) -> tuple[Marginals, "arviz.InferenceData"]:
    """Gibbs estimate of ``p(x^k_i = 1 | x^0, x^n = y)`` and its ArviZ ``InferenceData``.

    Runs :class:`DCIMGibbs` under ``pyro.infer.MCMC`` (one process; chains are a batch
    dimension).  The marginals are Rao-Blackwellised (means of the units' conditionals
    over sweeps); ``stderr`` is their MCSE and ``ess`` the smallest bulk ESS of each
    image's units (ArviZ).  ``extra`` holds ``seconds`` (sampling wall time) and
    ``seconds_per_ess`` per image.  The ``InferenceData`` posterior holds the sampled
    bits as ``x{k}`` with dims ``(chain, draw, image, x{k}_unit)``.

    ``num_threads`` sets torch's intra-op threads while sampling (restored afterwards):
    a sweep is many small operations, and on a busy CPU one thread can be far faster.
    """
    kernel = DCIMGibbs(net, num_chains=num_chains, direction=direction, init=init)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            mcmc.run(x0, y)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    draws = mcmc.get_samples(group_by_chain=True)                                # (chain, draw, batch, …)
    cond = kernel.conditional_draws()
    means, mcse, ess = diagnostics.mean_mcse_ess(cond)
    names = [hidden_site(k) for k in kernel.chain.hidden]
    per_image_ess = torch.cat([ess[n].flatten(1) for n in names], 1)
    # constant conditionals (units pinned at 0 or 1) have no ESS: leave them out of the minimum
    per_image_ess = torch.nan_to_num(per_image_ess, nan=float("inf")).min(1).values
    marg = Marginals([means[n] for n in names], stderr=Marginals([mcse[n] for n in names], method="gibbs"),
                     ess=per_image_ess, method="gibbs", direction=direction,
                     extra={"seconds": seconds, "seconds_per_ess": seconds / per_image_ess})
    idata = diagnostics.to_inference_data(draws, attrs={"sampling_seconds": seconds, "direction": direction,
                                                        "num_chains": num_chains, "warmup_steps": warmup_steps})
    return marg, idata
