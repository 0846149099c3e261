"""How good is approximation (2)?  Mean field against exact inference and sampling.

    python analysis/approximation_error.py [--quick] [--runs RUN_DIR ...] [--out analysis/results]

Part 1, random nets: the approximations (first-order (2), AP2, variational; issue 14) of the
hidden marginals and class posterior against exact enumeration, sweeping the weight scale,
for {0,1} and ±1 units (tables + plots), with the variational bound's gap to the exact
log-likelihood and each approximation's cost per image relative to (2).
Part 2, trained nets (``--runs``, e.g. the dense discriminative, (21) and (22) runs):
the mean-field class posterior against ancestral sampling of the forward chain, and the
reverse model's per-pixel marginals against ancestral sampling of the reverse chain; the
same for AP2 and variational, and the variational bound against importance sampling.
Part 3, estimator quality and cost on small nets: importance sampling and Gibbs
against the exact posterior ``p(x^1..x^{n-1} | x^0, x^n)``.
Part 4, training through an approximation (``--train-runs``): accuracy, NLL, expected
calibration error and reverse loss of nets trained with first-order or AP2 passes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _report
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_dcim.allocator import keep_freed_memory
from pyro_dcim.approximations import unit_variance  # noqa: E402
from pyro_dcim.inference import (  # noqa: E402
    ancestral_marginals,
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
    gibbs_posterior,
    importance_log_likelihood,
    importance_marginals,
    mean_field_marginals,
    variational_posterior,
)
from pyro_dcim.inference.marginals import Marginals  # noqa: E402
from pyro_dcim.quality import class_kl, compare_marginals, fraction_within, random_dcim  # noqa: E402

APPROX = ("first-order", "ap2", "variational")
SHORT = {"first-order": "(2)", "ap2": "AP2", "variational": "var", "ap2+mc": "AP2+MC"}
MC_SOFTMAX = 4000   # draws of the class pre-activation for the Monte-Carlo softmax under AP2's Gaussian

FULL = dict(widths=(8, 12), depths=(2, 3, 4), scales=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0), seeds=3, images=64,
            trained_images=200, samples=10_000, var_images=50, trained_is_samples=1000,
            est_nets=6, est_images=16, is_samples=4000, gibbs_samples=1000,
            gibbs_warmup=200, chains=4)
QUICK = dict(widths=(6,), depths=(2, 3), scales=(0.5, 4.0), seeds=1, images=8,
             trained_images=8, samples=200, var_images=4, trained_is_samples=100,
             est_nets=2, est_images=4, is_samples=500, gibbs_samples=150,
             gibbs_warmup=30, chains=2)


def random_batch(input_dim: int, classes: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    x0 = torch.bernoulli(torch.full((images, input_dim), 0.5, dtype=torch.float64), generator=g)
    return x0, torch.randint(classes, (images,), generator=g)


# -- part 1 ----------------------------------------------------------------------------------
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


def part1(s: dict, out: Path, threads: int) -> dict:
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
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True)
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
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
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
    plt.close(fig)
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


# -- part 2 ----------------------------------------------------------------------------------
def part2(s: dict, runs: list[str], threads: int) -> str:
    if not runs:
        return "Part 2 was not run: give trained run folders with `--runs`."
    header = ["run", "images", "KL(anc ‖ mf)", "top-1 agree", "acc mf", "acc ancestral", "class MCSE",
              "fwd MAE x1", "fwd MAE x_{n-1}", "rev pixel MAE", "rev pixel max err", "rev hidden MAE", "seconds"]
    approx_header = ["run", "KL(anc ‖ (2))", "KL(anc ‖ AP2)", f"KL(anc ‖ var), first {s['var_images']}",
                     "KL(anc ‖ (2)) same images", "MAE x_{n-1} (2)", "MAE x_{n-1} AP2", "rev pixel MAE AP2",
                     "var bound log p(x0|y)", f"IS ({s['trained_is_samples']} samples)", "IS − bound", "IS ESS"]
    rows, approx_rows, found = [], [], {}
    for path in runs:
        run = _report.load_run(path)
        x0, y = run.test_data(s["trained_images"])
        torch.manual_seed(0)
        start = time.perf_counter()
        anc = ancestral_marginals(run.net, x0, s["samples"])
        fwd = compare_marginals(mean_field_marginals(run.net, x0), anc, y)
        classes = torch.arange(run.net.num_classes)
        anc_rev = ancestral_marginals(run.net, None, s["samples"], y=classes, direction="reverse")
        rev = compare_marginals(mean_field_marginals(run.net, y=classes, direction="reverse"), anc_rev)
        seconds = time.perf_counter() - start
        row = [run.label, len(x0), fwd.class_kl, fwd.argmax_agreement, fwd.accuracy["mean_field"],
               fwd.accuracy["ancestral"], float(anc.stderr.classes.mean()), fwd.hidden_mae[0], fwd.hidden_mae[-1],
               rev.image_mae, rev.image_max_error, sum(rev.hidden_mae) / len(rev.hidden_mae), seconds]
        rows.append(row)
        found[run.objective] = row
        approx_rows.append(part2_approximations(s, run, x0, y, anc, anc_rev, fwd))
        print("part 2: " + "  ".join(_report.fmt(v, 3) for v in row))
    settings = (f"Settings: the first {s['trained_images']} test digits of each run's dataset (intensities as given to "
                f"the net); ancestral = exact sampling of the forward chain (eq. 13) with {s['samples']} samples per "
                "image, Rao-Blackwellised (class MCSE: its mean standard error of p(x^n | x^0)); reverse: per class, "
                f"{s['samples']} ancestral samples of the reverse chain (eq. 17) against the reverse mean field. "
                "MAE = mean |mean field − sampling| over units (hidden) or pixels (image).")
    summary = ""
    if "discriminative" in found and "bidirectional" in found:
        d, b = found["discriminative"], found["bidirectional"]
        better = "smaller" if b[2] < d[2] else "larger"
        summary = (f"Training with (21) makes the forward approximation's class KL {better} than discriminative "
                   f"training ({b[2]:.3g} vs {d[2]:.3g} nats; top-1 agreement {b[3]:.3f} vs {d[3]:.3f}), and the "
                   f"reverse mean-field image marginals are off by {b[9]:.3g} vs {d[9]:.3g} per pixel on average.")
    approx_note = (f"The approximations on the same images against the same ancestral samples; variational on the "
                   f"first {s['var_images']} images only (one class-clamped fit per class), and its bound on "
                   f"log p(x^0 | y) (nats per image) against importance sampling with the mean-field guide "
                   f"({s['trained_is_samples']} samples), itself a stochastic lower bound: 'IS − bound' is a lower "
                   "bound on the variational gap. (AIS, the better reference, was not in this branch.)")
    return "\n\n".join([settings, _report.table(header, rows, 3), summary, approx_note,
                        _report.table(approx_header, approx_rows, 3)])


def part2_approximations(s: dict, run, x0, y, anc, anc_rev, fwd) -> list:
    """AP2 and variational against ancestral sampling on a trained net, and the variational bound against IS."""
    net, classes = run.net, torch.arange(run.net.num_classes)
    ap2 = compare_marginals(mean_field_marginals(net, x0, approximation="ap2"), anc, y)
    ap2_rev = compare_marginals(mean_field_marginals(net, y=classes, direction="reverse", approximation="ap2"),
                                anc_rev)
    k = s["var_images"]
    sub = Marginals([h[:k] for h in anc.hidden], None if anc.classes is None else anc.classes[:k],
                    method=anc.method, direction=anc.direction)
    var = compare_marginals(mean_field_marginals(net, x0[:k], approximation="variational"), sub)
    first = compare_marginals(mean_field_marginals(net, x0[:k]), sub)
    with torch.no_grad():
        bound = variational_posterior(net, x0[:k], y=y[:k], direction="reverse").elbo
        torch.manual_seed(1)
        imp = importance_log_likelihood(net, x0[:k], y[:k], s["trained_is_samples"])
    return [run.label, fwd.class_kl, ap2.class_kl, var.class_kl, first.class_kl, fwd.hidden_mae[-1],
            ap2.hidden_mae[-1], ap2_rev.image_mae, float(bound.mean()), float(imp.estimate.mean()),
            float((imp.estimate - bound).mean()), float(imp.ess.median())]


# -- part 3 ----------------------------------------------------------------------------------
def part3(s: dict, threads: int) -> str:
    header = ["net", "units", "s", "IS samples", "IS within 3 MCSE", "IS median ESS", "IS s / ESS",
              "Gibbs draws", "Gibbs within 3 MCSE", "Gibbs median ESS", "Gibbs s / ESS", "max R-hat"]
    rows = []
    from pyro_dcim.inference import diagnostics

    settings_list = [(units, scale) for units in ("01", "pm1") for scale in (1.0, 3.0)][:s["est_nets"]]
    for i, (units, scale) in enumerate(settings_list):
        net = random_dcim([8, 8], 12, 4, scale, units, seed=100 + i)
        x0, y = random_batch(12, 4, s["est_images"], seed=100 + i)
        exact = exact_posterior(net, x0, y)
        torch.manual_seed(i)
        start = time.perf_counter()
        imp = importance_marginals(net, x0, s["is_samples"], y)
        is_seconds = time.perf_counter() - start
        gibbs, idata = gibbs_posterior(net, x0, y, num_samples=s["gibbs_samples"], warmup_steps=s["gibbs_warmup"],
                                       num_chains=s["chains"], num_threads=threads)
        rhat = max(float(torch.nan_to_num(v, nan=1.0).max()) for v in diagnostics.rhat(idata).values())
        rows.append([f"12 → 8 → 8 → 4 #{i}", units, scale, s["is_samples"], fraction_within(imp, exact),
                     float(imp.ess.median()), float((is_seconds / imp.ess).median()),
                     s["gibbs_samples"] * s["chains"], fraction_within(gibbs, exact), float(gibbs.ess.median()),
                     float(gibbs.extra["seconds_per_ess"].median()), rhat])
        print("part 3: " + "  ".join(_report.fmt(v, 3) for v in rows[-1]))
    is_cov, gibbs_cov = min(r[4] for r in rows), min(r[8] for r in rows)
    ratio = sorted(r[10] / r[6] for r in rows)[len(rows) // 2]
    weakest = min(rows, key=lambda r: r[5])
    summary = (f"Worst coverage over the nets: IS {is_cov:.3f}, Gibbs {gibbs_cov:.3f} (goal ≥ 0.95). The IS weights "
               f"degrade with the weight scale (smallest median ESS {weakest[5]:.0f} of {weakest[3]}, at s = "
               f"{weakest[2]:g} with {weakest[1]} units, where its coverage is {weakest[4]:.3f}); per effective "
               f"sample Gibbs costs about {ratio:.0f}× the wall-clock of IS on these nets (median over nets).")
    settings = (f"Settings: dense nets 12 → 8 → 8 → 4 with W, b ~ N(0, s²/fan-in), {s['est_images']} random binary "
                "images with random classes each; the target is the hidden posterior p(x^1, x^2 | x^0, x^n) and the "
                f"reference its exact value by enumeration. IS: {s['is_samples']} samples from the default (defensive) "
                "proposal, MCSE from the Pareto-smoothed weights, all images (flagged ones too; the coverage of "
                "the images PSIS does not flag, over many more nets, is in importance_coverage.md). "
                f"Gibbs: {s['chains']} chains × {s['gibbs_samples']} draws after "
                f"{s['gibbs_warmup']} warm-up sweeps, Rao-Blackwellised means, ArviZ MCSE and bulk ESS (of the worst "
                "unit per image). 'within 3 MCSE': fraction of all unit marginals with |estimate − exact| ≤ 3 MCSE "
                "(+1e-6); the goal is ≥ 0.95. s / ESS: wall-clock seconds of the whole batch per effective "
                "sample of one image (all images run together), median over images.")
    return "\n\n".join([settings, _report.table(header, rows, 3), summary])


# -- part 4 ----------------------------------------------------------------------------------
def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins: ``Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)|``."""
    conf, pred = probs.max(-1)
    correct = (pred == y).to(probs.dtype)
    which = (conf * bins).long().clamp(max=bins - 1)
    total = probs.new_zeros(())
    for b in range(bins):
        inside = which == b
        if inside.any():
            total = total + inside.sum() / len(y) * (correct[inside].mean() - conf[inside].mean()).abs()
    return float(total)


@torch.no_grad()
def part4(s: dict, runs: list[str]) -> str:
    if not runs:
        return "Part 4 was not run: give run folders trained with different `--approximation` with `--train-runs`."
    import json

    header = ["run", "trained with", "units", "dataset", "s / epoch", "val acc", "test acc (2)", "test acc AP2",
              "test NLL (2)", "test NLL AP2", "ECE (2)", "ECE AP2", "test rev loss / px (own)",
              f"var bound log p(x0|y), {s['var_images']} test"]
    rows = []
    for path in runs:
        run = _report.load_run(path)
        config = json.loads((run.path / "config.json").read_text())["config"]
        summary = json.loads((run.path / "summary.json").read_text())
        x0, y = run.test_data(10_000)
        scores = {}
        for a in ("first-order", "ap2"):
            probs = torch.cat([run.net.forward_mean_field(x0[i:i + 1000], approximation=a).logits.softmax(-1)
                               for i in range(0, len(x0), 1000)])
            scores[a] = (float((probs.argmax(-1) == y).double().mean()),
                         float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean()),
                         expected_calibration_error(probs, y))
        k = s["var_images"]
        bound = variational_posterior(run.net, x0[:k], y=y[:k], direction="reverse").elbo.mean()
        rows.append([run.path.name, config.get("approximation", "first-order"), config["units"], config["dataset"],
                     summary["seconds"] / max(summary["epochs"], 1), summary["val_acc"], scores["first-order"][0],
                     scores["ap2"][0], scores["first-order"][1], scores["ap2"][1], scores["first-order"][2],
                     scores["ap2"][2], summary["test_reverse_nll_per_pixel"], float(bound)])
        print("part 4: " + "  ".join(_report.fmt(v, 4) for v in rows[-1]))
    settings = ("Each run's whole test split, evaluated through both passes whatever it was trained with: accuracy, "
                "NLL = −log p̂(y | x^0) in nats, ECE with 15 equal-width confidence bins; the reverse loss is the "
                "run's own (binary cross-entropy per pixel of the class-conditional reverse pass of its "
                f"approximation); the variational bound on log p(x^0 | y) (first {s['var_images']} test images, "
                "nats per image) scores every generator with the same yardstick; s / epoch from the run's summary.")
    return "\n\n".join([settings, _report.table(header, rows, 4)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; used by the tests)")
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders for part 2")
    p.add_argument("--train-runs", nargs="*", default=[], help="run folders trained with different --approximation "
                   "for part 4")
    p.add_argument("--parts", nargs="*", type=int, default=[1, 2, 3], choices=[1, 2, 3, 4])
    p.add_argument("--samples", type=int, default=None, help="ancestral samples per image in part 2 (default 10^4)")
    p.add_argument("--images", type=int, default=None, help="test images per run in part 2 (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT,
                   help="default out/analysis (untracked); analysis/results updates the committed tables")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = dict(QUICK if args.quick else FULL)
    s["samples"] = args.samples or s["samples"]
    s["trained_images"] = args.images or s["trained_images"]
    args.out.mkdir(parents=True, exist_ok=True)
    note = _report.machine_note(args.threads)
    mode = "quick (tiny) settings" if args.quick else "full settings"
    head = f"Generated by {_report.command_line()} ({mode}). {note}"
    if 1 in args.parts:
        _report.write_markdown(args.out / "approximation_random_nets.md",
                               "Part 1: mean field against exact inference on random nets",
                               [head, part1(s, args.out, args.threads)["section"]])
    if 2 in args.parts:
        _report.write_markdown(args.out / "approximation_trained_nets.md",
                               "Part 2: mean field against ancestral sampling on trained nets",
                               [head, part2(s, args.runs, args.threads)])
    if 4 in args.parts:
        _report.write_markdown(args.out / "approximation_training.md",
                               "Part 4: training through a better approximation",
                               [head, part4(s, args.train_runs)])
    if 3 in args.parts:
        _report.write_markdown(args.out / "estimator_quality.md",
                               "Part 3: estimator quality and cost against the exact posterior",
                               [head, part3(s, args.threads)])
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
