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

__all__ = ["load_arviz", "psis", "to_inference_data", "summary", "rhat", "ess", "mcse", "mean_mcse_ess",
           "per_image_report", "worst_units", "plot_trace_rank"]


def load_arviz():
    """ArviZ, imported once (seconds on a cold start; the commands do it before timing their work)."""
    return _az()


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
    # A unit that holds one value in every draw of every chain (pinned at 0 or 1 by its image; hundreds
    # in a trained net) has zero variance, so ArviZ's R-hat is 0/0: it prints "invalid value encountered
    # in scalar divide" once per such unit and reports NaN, which is the right answer (nothing to mix).
    # Known to be harmless, so silenced here; az.summary called directly prints them all.
    with warnings.catch_warnings():
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


def worst_units(idata: "arviz.InferenceData", image: int = 0, units: int = 4) -> list[tuple[float, str, int]]:
    """``(R-hat, variable, unit)`` of the ``units`` units of one image with the largest R-hat, largest
    first; units constant in every chain (NaN R-hat) are left out."""
    values = ((float(v), name, u) for name, t in rhat(idata).items() for u, v in enumerate(t[image].flatten().tolist()))
    return sorted((v for v in values if not np.isnan(v[0])), reverse=True)[:units]


def plot_trace_rank(idata: "arviz.InferenceData", path: str | Path, image: int = 0, units: int = 4) -> Path:
    """Rank plots (``az.plot_rank``) and per-chain running means of the ``units`` hidden units of one
    image with the largest R-hat, saved as a PNG.

    The draws are 0/1, so no density is drawn: the rank bars of mixed chains are flat, and the
    running means of converged chains meet.  Units constant in every chain (NaN R-hat) are left out.
    """
    from matplotlib.figure import Figure

    az = _az()
    worst = worst_units(idata, image, units)
    fig = Figure(figsize=(10, 2.3 * max(len(worst), 1)), layout="constrained")
    if not worst:
        ax = fig.subplots()
        ax.text(0.5, 0.5, f"image {image}: every unit is constant in every chain", ha="center", va="center")
        ax.axis("off")
    rng = np.random.default_rng(0)
    for (r_hat, name, unit), (ax_rank, ax_mean) in zip(worst, fig.subplots(len(worst), 2, squeeze=False)
                                                        if worst else []):
        draws = np.asarray(idata.posterior[name].values[:, :, image, unit], dtype=float)   # (chain, draw)
        # 0/1 draws tie in blocks; ties broken at random give ranks whose per-chain histograms are flat
        # exactly when every chain visits 1 as often
        untied = az.from_dict(posterior={"unit": draws + rng.uniform(0, 1e-3, draws.shape)})
        with warnings.catch_warnings():   # arviz 0.23 uses a matplotlib API deprecated in 3.11
            warnings.simplefilter("ignore", DeprecationWarning)
            az.plot_rank(untied, kind="bars", ax=ax_rank)
        ax_rank.set_title(f"{name}[{unit}] of image {image}: rank plot, R-hat {r_hat:.3f}", fontsize=9)
        ax_rank.set_xlabel("rank (all chains, ties broken at random)", fontsize=8)
        ax_rank.set_ylabel("chain", fontsize=8)
        running = draws.cumsum(1) / np.arange(1, draws.shape[1] + 1)
        for chain, line in enumerate(running):
            ax_mean.plot(np.arange(1, len(line) + 1), line, lw=1, label=f"chain {chain}")
        ax_mean.set(ylim=(-0.02, 1.02), xlabel="draw", ylabel="running mean")
        ax_mean.set_title(f"{name}[{unit}]: running mean of each chain", fontsize=9)
        ax_mean.legend(fontsize=7, loc="best")
    from ..training.atomic import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))   # whole or not at all, even on a signal
    return path
