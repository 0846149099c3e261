"""Every ArviZ call of the package (arviz 0.23 API), so a move to ArviZ 1.x touches one file.

Draws come in as ``{name: tensor (chain, draw, image, *unit_shape)}``; each variable
becomes an ArviZ variable with dims ``(chain, draw, image, {name}_unit)``.
Convergence diagnostics are the rank-normalised split R-hat, bulk/tail ESS and
the MCSE of the mean (Vehtari et al. 2021), as ArviZ computes them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    import arviz
    import pandas

__all__ = ["psis", "to_inference_data", "summary", "rhat", "ess", "mcse", "mean_mcse_ess", "per_image_report",
           "plot_trace_rank"]


def _az():
    with warnings.catch_warnings():   # arviz 0.23 warns about its coming refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().flatten(3).cpu().double().numpy()


def psis(log_weights: torch.Tensor, reff: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``az.psislw`` per image of log-weights ``(samples, batch)``: the Pareto-smoothed, normalised
    log-weights ``(samples, batch)`` and the Pareto shape ``k̂`` ``(batch,)``, in float64."""
    lw = log_weights.detach().double().cpu().T.numpy()          # ArviZ wants samples last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        smoothed, khat = _az().psislw(lw, reff=reff)
    return torch.from_numpy(np.ascontiguousarray(smoothed.T)), torch.as_tensor(np.asarray(khat, dtype=np.float64))


def to_inference_data(draws: Mapping[str, torch.Tensor], attrs: Optional[dict] = None) -> "arviz.InferenceData":
    """``az.from_dict`` of per-image draws ``(chain, draw, image, …)``, units flattened."""
    az = _az()
    posterior = {name: _numpy(v) for name, v in draws.items()}
    dims = {name: ["image", f"{name}_unit"] for name in draws}
    return az.from_dict(posterior=posterior, dims=dims, attrs=attrs or {})


def summary(idata: "arviz.InferenceData", var_names: Optional[Sequence[str]] = None) -> "pandas.DataFrame":
    """``az.summary``: mean, sd, HDI, MCSE (mean, sd), ESS (bulk, tail) and R-hat per quantity."""
    with warnings.catch_warnings():   # constant draws (units pinned at 0 or 1) give NaN diagnostics
        warnings.simplefilter("ignore", RuntimeWarning)
        return _az().summary(idata, var_names=list(var_names) if var_names else None, kind="all", round_to="none")


def _per_variable(dataset, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, v in like.items():
        values = torch.as_tensor(np.array(dataset[name].values), dtype=v.dtype, device=v.device)
        out[name] = values.reshape(v.shape[2:])
    return out


def _draws_of(idata: "arviz.InferenceData") -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(np.array(idata.posterior[name].values)) for name in idata.posterior.data_vars}


def rhat(idata: "arviz.InferenceData") -> dict[str, torch.Tensor]:
    """Rank-normalised split R-hat per variable, ``(image, unit)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _per_variable(_az().rhat(idata), _draws_of(idata))


def ess(idata: "arviz.InferenceData", method: str = "bulk") -> dict[str, torch.Tensor]:
    """Effective sample size per variable (``method="bulk"`` or ``"tail"``), ``(image, unit)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _per_variable(_az().ess(idata, method=method), _draws_of(idata))


def mcse(idata: "arviz.InferenceData") -> dict[str, torch.Tensor]:
    """Monte Carlo standard error of the mean per variable, ``(image, unit)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _per_variable(_az().mcse(idata, method="mean"), _draws_of(idata))


def mean_mcse_ess(draws: Mapping[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """Posterior mean, its MCSE and bulk ESS of each quantity, shaped like one draw ``(image, …)``."""
    idata = to_inference_data(draws)
    means = {name: v.mean((0, 1)) for name, v in draws.items()}
    shape = {name: v.shape[2:] for name, v in draws.items()}
    se = {name: t.reshape(shape[name]).to(draws[name]) for name, t in mcse(idata).items()}
    es = {name: t.reshape(shape[name]).to(draws[name]) for name, t in ess(idata).items()}
    return means, se, es


def per_image_report(idata: "arviz.InferenceData", seconds: Optional[float] = None) -> "pandas.DataFrame":
    """One row per image: worst R-hat, smallest bulk/tail ESS and largest MCSE over its hidden
    units (NaNs of constant units ignored), and seconds per effective sample
    (``seconds / min ess_bulk``) when the sampling time is given."""
    import pandas as pd

    def reduce(stat: dict[str, torch.Tensor], how) -> np.ndarray:
        per_image = torch.cat([v.flatten(1) for v in stat.values()], 1).double().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows: every unit constant
            return how(per_image, axis=1)

    table = pd.DataFrame({
        "r_hat_max": reduce(rhat(idata), np.nanmax),
        "ess_bulk_min": reduce(ess(idata, "bulk"), np.nanmin),
        "ess_tail_min": reduce(ess(idata, "tail"), np.nanmin),
        "mcse_mean_max": reduce(mcse(idata), np.nanmax),
    })
    table.index.name = "image"
    if seconds is not None:
        table["seconds_per_ess"] = seconds / table["ess_bulk_min"]
    return table


def plot_trace_rank(idata: "arviz.InferenceData", path: str | Path, image: int = 0, units: int = 3) -> Path:
    """Trace and rank plots (``az.plot_trace(kind="rank_bars")``) of the first ``units`` units of
    every hidden layer for one image, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    az = _az()
    posterior = idata.posterior
    small = {name: posterior[name].isel(image=image).isel({f"{name}_unit": slice(0, units)}).values
             for name in posterior.data_vars}
    subset = az.from_dict(posterior=small, dims={name: [f"{name}_unit"] for name in small})
    with warnings.catch_warnings():   # arviz 0.23 uses a matplotlib API deprecated in 3.11;
        warnings.simplefilter("ignore", DeprecationWarning)    # constant units have no density
        warnings.filterwarnings("ignore", "Your data appears to have a single value", UserWarning)
        axes = az.plot_trace(subset, kind="rank_bars", compact=False, show=False)
    fig = np.asarray(axes).flat[0].figure
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
