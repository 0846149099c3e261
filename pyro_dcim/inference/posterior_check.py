"""The posterior's view of importance weights: the ESS that the proposal's own samples cannot see.

Importance sampling with ``S`` draws from ``q`` has the large-sample ESS ``S / ρ``, with

    ρ = E_q[w²] / Z² = E_π[w / Z],        w(h) = p(x, h) / q(h),  Z = E_q[w],  π = p(h | x),

the second form because ``q w² = π Z w``.  The sample ESS ``(Σw)² / Σw²`` (and its Pareto-smoothed
version) estimates ``E_q[w²]`` from draws of ``q``: a region of the posterior where ``q`` is tiny is
rarely drawn, and when it is not drawn at all the weights look light, ``k̂`` is small and the ESS can
be far too large.  The second form estimates ``ρ`` from draws of the *posterior*, where that region
lies: a short Gibbs run (:class:`~.energy.ChainEnergy`, the kernel of :class:`~.gibbs.DCIMGibbs`)
scores ``w / Ẑ`` at the states it visits.  The two estimates miss in the same direction (each is
optimistic about mass it does not reach), so the smaller ESS is the one to report, and a sample ESS
more than twice the posterior's says the proposal missed mass: the image is flagged.

Optional (``importance_marginals(..., posterior_check=100)``): with its 150 sweeps of 4 chains per image,
importance sampling costs 29-468× ``S`` mean-field passes on the dense 784-512-512-10 net.  The default
looks with the cheaper probe (:mod:`.probe`); each reaches modes the other misses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch

from ..chain import Chain
from ..pyro_models import hidden_site
from .energy import ChainEnergy, posterior_weights

if TYPE_CHECKING:
    from ..model import DCIM

__all__ = ["PosteriorCheck", "posterior_ess_check", "DISAGREEMENT"]

#: An image is flagged when its sample ESS exceeds the posterior-side ESS by more than this factor.
DISAGREEMENT = 2.0


class PosteriorCheck(NamedTuple):
    """Per image ``(batch,)``: ``rho`` = the Gibbs estimate of ``E_π[w / Ẑ]`` (at least 1) and
    ``ess`` = ``num_samples / rho``, the large-sample ESS of ``num_samples`` draws of the proposal."""

    rho: torch.Tensor
    ess: torch.Tensor


@torch.no_grad()
def posterior_ess_check(net: "DCIM", x0: torch.Tensor, y: torch.Tensor, direction: str,
                        log_weight_at: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                        log_evidence: torch.Tensor, num_samples: int, *, sweeps: int = 100,
                        num_chains: int = 4) -> PosteriorCheck:
    """``E_π[w / Ẑ]`` from ``num_chains`` Gibbs chains per image on the posterior of ``direction``.

    The chains start from the target's own prior chain (ancestral, far end free), spend ``sweeps // 2``
    sweeps warming up and score ``log_weight_at`` (``{site: (chains, batch, *shape)}`` → ``(chains,
    batch)``, the importance sampler's ``log p(x, h) − log q(h)``) after each of the next ``sweeps``.
    ``log_evidence``: the sampler's ``log Ẑ`` per image.
    """
    energy = ChainEnergy(net, x0, y)
    chain = Chain(net, direction)
    bits = chain.sample(chain.start_state(x0, y), num_chains)
    weights = posterior_weights(direction)
    shapes = {k: net.shapes[k] for k in bits}
    total = None
    for t in range(sweeps // 2 + sweeps):
        energy.sweep(bits, weights)
        if t < sweeps // 2:
            continue
        drawn = {hidden_site(k): b.reshape(*b.shape[:2], *shapes[k]) for k, b in bits.items()}
        ratio = (log_weight_at(drawn).double() - log_evidence.double()).exp().mean(0)
        total = ratio if total is None else total + ratio
    rho = (total / max(sweeps, 1)).clamp_min(1.0)
    return PosteriorCheck(rho, num_samples / rho)
