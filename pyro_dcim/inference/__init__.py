"""Inference engines beside the mean-field approximation.

Every estimator takes a :class:`~pyro_dcim.DCIM` and a batch and returns
:class:`Marginals` (hidden layers in index order ``x^1 … x^{n-1}``):

* :func:`mean_field_marginals` — the approximation itself, eq. (2), (14)-(15), or AP2 / variational;
* :func:`variational_posterior` — Saul-Jaakkola-Jordan mean field and its lower bound
  (:mod:`pyro_dcim.approximations.variational`, re-exported);
* :func:`exact_marginals`, :func:`exact_posterior`, :func:`exact_log_likelihood` —
  enumeration over each layer's ``2^{m_k}`` states (narrow layers); :func:`exact_importance_ess` —
  the large-sample ESS of importance sampling, over every joint state (tiny nets);
* :func:`ancestral_marginals`, :func:`importance_marginals`,
  :func:`importance_log_likelihood` — vectorised Monte Carlo with the Pyro models;
* :func:`importance_bounds`, :func:`k_sample_bounds` — K-sample bounds on ``log p(x^0 | y)``;
* :func:`importance_weighted_log_likelihood` — the literature's IS-K protocol for ``log p(x^0 | y)`` and
  ``log p(x^0)`` (K = 5,000 particles from a recognition chain, the class summed out exactly);
* :class:`DCIMGibbs`, :func:`gibbs_posterior` — a Gibbs kernel for ``pyro.infer.MCMC``;
* :func:`ais_log_likelihood`, :func:`ais_log_marginal`, :func:`bdmc` — annealed importance
  sampling of ``log p(x^0 | y)`` and ``log p(x^0)``, and BDMC sandwiches on simulated data;
* :mod:`.weights` — Pareto-smoothed importance weights: ``k̂``, ESS and error bars;
* :mod:`.diagnostics` — ArviZ summaries, R-hat, ESS, MCSE, trace/rank plots.
"""

from ..approximations.variational import VariationalFit, variational_posterior
from . import diagnostics
from .ais import AISResult, MarginalResult, ais_log_likelihood, ais_log_marginal
from .bdmc import BDMCResult, bdmc, simulate
from .bounds import KSampleBound, importance_bounds, k_sample_bounds
from .exact import (
    DEFAULT_MAX_UNITS,
    LayerTooWideError,
    exact_importance_ess,
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
)
from .gibbs import DCIMGibbs, gibbs_posterior
from .importance_weighted import ImportanceWeighted, importance_weighted_log_likelihood
from .marginals import Marginals
from .mean_field import mean_field_marginals
from .sampling import (
    LogLikelihood,
    ancestral_marginals,
    default_chunk_size,
    importance_log_likelihood,
    importance_marginals,
)

__all__ = [
    "Marginals", "mean_field_marginals", "variational_posterior", "VariationalFit",
    "exact_marginals", "exact_posterior", "exact_log_likelihood", "exact_importance_ess", "LayerTooWideError",
    "DEFAULT_MAX_UNITS",
    "ancestral_marginals", "importance_marginals", "importance_log_likelihood", "LogLikelihood", "default_chunk_size",
    "KSampleBound", "importance_bounds", "k_sample_bounds",
    "ImportanceWeighted", "importance_weighted_log_likelihood",
    "DCIMGibbs", "gibbs_posterior", "diagnostics",
    "ais_log_likelihood", "ais_log_marginal", "bdmc", "simulate", "AISResult", "BDMCResult", "MarginalResult",
]
