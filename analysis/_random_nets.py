"""Part 1 of ``approximation_error.py``: the approximations against exact enumeration on random nets."""

from __future__ import annotations

import time
from pathlib import Path

import _report
import torch
from matplotlib.figure import Figure

from pyro_dcim.approximation_error import class_kl, compare_marginals, random_dcim
from pyro_dcim.approximations import unit_variance
from pyro_dcim.inference import (
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
    mean_field_marginals,
    variational_posterior,
)

APPROX = ("first-order", "ap2", "variational")
SHORT = {"first-order": "(2)", "ap2": "AP2", "variational": "var", "ap2+mc": "AP2+MC"}
MC_SOFTMAX = 4000   # draws of the class pre-activation for the Monte-Carlo softmax under AP2's Gaussian


def random_batch(input_dim: int, classes: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    x0 = torch.bernoulli(torch.full((images, input_dim), 0.5, dtype=torch.float64), generator=g)
    return x0, torch.randint(classes, (images,), generator=g)


@torch.no_grad()
def ap2_mc_classes(net, x0: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """``E softmax(a)`` by Monte Carlo under AP2's Gaussian class pre-activation (mean ``W μ + b``,
    covariance ``W diag(v) Wᵀ``): the class layer without its own approximation."""
    h = net.forward_mean_field(x0, upto=net.num_layers - 1, approximation="ap2").hidden[-1]
    w, b = net.layers[-1].weight, net.layers[-1].bias
    mean, cov = h @ w.T + b, torch.einsum("bj,cj,dj->bcd", unit_variance(net.units, h), w, w)
    chol = torch.linalg.cholesky(cov + 1e-9 * torch.eye(len(b), dtype=cov.dtype))
    z = torch.randn(draws, *mean.shape, generator=torch.Generator().manual_seed(seed), dtype=mean.dtype)
    return (mean + (chol @ z.unsqueeze(-1)).squeeze(-1)).softmax(-1).mean(0)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_net(net, x0: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """Every approximation against exact enumeration on one random net (forward marginals, class
    posterior, the variational bounds) and the seconds each pass took."""
    exact = exact_marginals(net, x0)
    out = {"hidden": {}, "kl": {}, "seconds": {}}
    for name in APPROX:
        approx, out["seconds"][name] = _timed(lambda name=name: mean_field_marginals(net, x0, approximation=name))
        err = compare_marginals(approx, exact)
        out["hidden"][name], out["kl"][name] = err.hidden_mae, err.class_kl
    out["kl"]["ap2+mc"] = float(class_kl(exact.classes, ap2_mc_classes(net, x0, MC_SOFTMAX, seed)).mean())
    fwd = variational_posterior(net, x0, y=y).elbo.detach()
    rev = variational_posterior(net, x0, y=y, direction="reverse").elbo.detach()
    out["gap_fwd"] = float((exact_posterior(net, x0, y).log_evidence - fwd).mean())
    out["gap_rev"] = float((exact_log_likelihood(net, x0, y) - rev).mean())
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def part1(s: dict, out: Path) -> dict:
    """The approximations vs exact on random nets; returns the rows and writes the tables and the plots."""
    rows = []
    for units in ("01", "pm1"):
        for depth in s["depths"]:
            for width in s["widths"]:
                for scale in s["scales"]:
                    for seed in range(s["seeds"]):
                        net = random_dcim([width] * (depth - 1), 16, 4, scale, units, seed=seed)
                        x0, y = random_batch(16, 4, s["images"], seed)
                        rows.append(dict(units=units, depth=depth, width=width, scale=scale, seed=seed,
                                         **compare_net(net, x0, y, seed)))
    print(f"part 1: {len(rows)} random nets compared with exact enumeration")

    def pick(units, scale, depth=None):
        return [r for r in rows if r["units"] == units and r["scale"] == scale and depth in (None, r["depth"])]

    def kl(units, depth, scale, name):
        return _mean(r["kl"][name] for r in pick(units, scale, depth))

    def layer_mae(units, k, scale, name):
        return _mean(r["hidden"][name][k - 1] for r in pick(units, scale) if len(r["hidden"][name]) >= k)

    names = [*APPROX, "ap2+mc"]
    layers = range(1, max(s["depths"]))
    header = ["units", "s", *[f"KL {SHORT[a]} n={d}" for d in s["depths"] for a in names]]
    kl_rows = [[u, sc, *[kl(u, d, sc, a) for d in s["depths"] for a in names]] for u in ("01", "pm1")
               for sc in s["scales"]]
    mae_header = ["units", "s", *[f"MAE x{k} {SHORT[a]}" for k in layers for a in APPROX]]
    mae_rows = [[u, sc, *[layer_mae(u, k, sc, a) for k in layers for a in APPROX]] for u in ("01", "pm1")
                for sc in s["scales"]]
    gap_header = ["units", "s", *[f"{w} gap n={d}" for d in s["depths"] for w in ("log p(y|x0)", "log p(x0|y)")]]
    gap_rows = [[u, sc, *[_mean(r[g] for r in pick(u, sc, d)) for d in s["depths"] for g in ("gap_fwd", "gap_rev")]]
                for u in ("01", "pm1") for sc in s["scales"]]
    cost = {a: _mean(r["seconds"][a] / r["seconds"]["first-order"] for r in rows) for a in APPROX}
    for r in kl_rows:
        print("  " + "  ".join(_report.fmt(v, 3) for v in r))

    # the goal: at s >= 4 and the deepest net, the best new approximation's KL against (2)'s
    deep = max(s["depths"])
    goal_rows = []
    for u in ("01", "pm1"):
        for sc in [x for x in s["scales"] if x >= 4]:
            first = kl(u, deep, sc, "first-order")
            best = min(("ap2", "variational"), key=lambda a: kl(u, deep, sc, a))
            ratio = kl(u, deep, sc, best) / first
            goal_rows.append([u, sc, first, SHORT[best], kl(u, deep, sc, best), ratio,
                              "yes" if ratio <= 0.25 else "no", "yes" if ratio <= 0.1 else "no"])
    goal_header = ["units", "s", "KL (2)", "best new", "its KL", "ratio", "≤ 1/4 (goal)", "≤ 1/10 (moonshot)"]

    # the plots: error against weight scale (first-order, as before) and KL per approximation and depth
    fig = Figure(figsize=(9, 6.4))
    axes = fig.subplots(2, 2, sharex=True)
    for row, units in enumerate(("01", "pm1")):
        for k in layers:
            axes[row, 0].plot(s["scales"], [layer_mae(units, k, sc, "first-order") for sc in s["scales"]], "o-",
                              label=f"x{k}")
        for d in s["depths"]:
            axes[row, 1].plot(s["scales"], [kl(units, d, sc, "first-order") for sc in s["scales"]], "o-",
                              label=f"n = {d} ({d - 1} hidden)")
        axes[row, 0].set_ylabel(f"{units} units\nmean |mean field − exact|")
        axes[row, 1].set_ylabel("KL(exact ‖ mean field), nats")
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    axes[0, 0].set_title("hidden marginals, per layer depth", fontsize=10)
    axes[0, 1].set_title("class posterior p(x^n | x^0), per net depth", fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("weight scale s  (W ~ N(0, s²/fan-in))")
    fig.tight_layout()
    png = out / "approximation_random_nets.png"
    fig.savefig(png, dpi=72)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    styles = {d: st for d, st in zip(s["depths"], ("-", "--", ":", "-."))}
    colours = {"first-order": "C0", "ap2": "C1", "variational": "C2", "ap2+mc": "C3"}
    for ax, units in zip(axes, ("01", "pm1")):
        for a in names:
            for d in s["depths"]:
                ax.plot(s["scales"], [max(kl(units, d, sc, a), 1e-6) for sc in s["scales"]], "o" + styles[d],
                        color=colours[a], ms=3, label=f"{SHORT[a]}, {d - 1} hidden")
        ax.set(xscale="log", yscale="log", xlabel="weight scale s", title=f"{units} units")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("class KL(exact ‖ approximation), nats")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    png_kl = out / "approximations_kl.png"
    fig.savefig(png_kl, dpi=72)
    print(f"wrote {png}\nwrote {png_kl}")

    settings = (f"Settings: dense nets 16 → {'/'.join(map(str, s['widths']))} units per hidden layer → 4 classes, "
                f"n = {', '.join(map(str, s['depths']))} layers, W and b ~ N(0, s²/fan-in), {s['seeds']} seed(s) per "
                f"setting, {s['images']} random binary inputs x^0 per net (with random classes for the bounds); "
                "exact = enumeration of every layer's states. MAE: mean |p̂(x^k_i = 1) − p(x^k_i = 1 | x^0)| over "
                "units, inputs and nets. (2): the first-order pass; AP2: mean and variance propagation with the "
                "pairwise-probit softmax; var: variational mean field (hidden: q given x^0 alone; classes: the "
                "normalised bounds on log p(c | x^0)); AP2+MC: AP2's hidden layers, then the class softmax averaged "
                f"over {MC_SOFTMAX} draws of AP2's Gaussian class pre-activation (full covariance), which isolates "
                "the class layer's own approximation.")
    summary = (f"Cost per image relative to (2), mean over the nets: AP2 {cost['ap2']:.2g}×, variational "
               f"{cost['variational']:.2g}× (tiny nets: per-call overheads dominate; see benchmarks/approximations.py "
               "for the paper's dense net).")
    section = "\n\n".join([
        settings, "Class posterior, KL(exact ‖ approximation) in nats:", _report.table(header, kl_rows, 3),
        f"![class KL against weight scale]({png_kl.name})",
        f"The goal (n = {deep}, {deep - 1} hidden layers, s ≥ 4): the best new approximation's KL against (2)'s:",
        _report.table(goal_header, goal_rows, 3),
        "Hidden marginals, MAE per layer (all depths):", _report.table(mae_header, mae_rows, 3),
        f"![error of (2) against weight scale]({png.name})",
        "Variational bounds: mean gap to the exact log-likelihood, nats (forward: log p(y | x^0) given the "
        "class; reverse: log p(x^0 | y)):", _report.table(gap_header, gap_rows, 3), summary])
    return {"section": section, "rows": rows, "goal": goal_rows}


