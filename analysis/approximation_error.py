"""How good is approximation (2)?  Mean field against exact inference and sampling.

    python analysis/approximation_error.py [--quick] [--runs RUN_DIR ...] [--out analysis/results]

Part 1, random nets: mean-field hidden marginals and class posterior against exact
enumeration, sweeping the weight scale, for {0,1} and ±1 units (table + plot).
Part 2, trained nets (``--runs``, e.g. the dense discriminative, (21) and (22) runs):
the mean-field class posterior against ancestral sampling of the forward chain, and the
reverse model's per-pixel marginals against ancestral sampling of the reverse chain.
Part 3, estimator quality and cost on small nets: importance sampling and Gibbs
against the exact posterior ``p(x^1..x^{n-1} | x^0, x^n)``.
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

from pyro_dcim.allocator import keep_freed_memory  # noqa: E402
from pyro_dcim.evaluate import compare_marginals, fraction_within, random_dcim  # noqa: E402
from pyro_dcim.inference import (  # noqa: E402
    ancestral_marginals,
    exact_marginals,
    exact_posterior,
    gibbs_posterior,
    importance_marginals,
    mean_field_marginals,
)

FULL = dict(widths=(8, 12), depths=(2, 3, 4), scales=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0), seeds=3, images=64,
            trained_images=200, samples=10_000, est_nets=6, est_images=16, is_samples=4000, gibbs_samples=1000,
            gibbs_warmup=200, chains=4)
QUICK = dict(widths=(6,), depths=(2, 3), scales=(0.5, 4.0), seeds=1, images=8,
             trained_images=8, samples=200, est_nets=2, est_images=4, is_samples=500, gibbs_samples=150,
             gibbs_warmup=30, chains=2)


def random_batch(input_dim: int, classes: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    x0 = torch.bernoulli(torch.full((images, input_dim), 0.5, dtype=torch.float64), generator=g)
    return x0, torch.randint(classes, (images,), generator=g)


# -- part 1 ----------------------------------------------------------------------------------
def part1(s: dict, out: Path, threads: int) -> dict:
    """Mean field vs exact on random nets; returns the rows and writes the table and the plot."""
    rows = []
    for units in ("01", "pm1"):
        for depth in s["depths"]:
            for width in s["widths"]:
                for scale in s["scales"]:
                    for seed in range(s["seeds"]):
                        net = random_dcim([width] * (depth - 1), 16, 4, scale, units, seed=seed)
                        x0, _ = random_batch(16, 4, s["images"], seed)
                        err = compare_marginals(mean_field_marginals(net, x0), exact_marginals(net, x0))
                        rows.append(dict(units=units, depth=depth, width=width, scale=scale, seed=seed,
                                         hidden=err.hidden_mae, kl=err.class_kl, agree=err.argmax_agreement))
    print(f"part 1: {len(rows)} random nets compared with exact enumeration")

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    def layer_mae(units, k, scale):
        return mean(r["hidden"][k - 1] for r in rows if r["units"] == units and r["scale"] == scale
                    and len(r["hidden"]) >= k)

    def net_stat(units, depth, scale, key):
        return mean(r[key] for r in rows if r["units"] == units and r["scale"] == scale and r["depth"] == depth)

    layers = range(1, max(s["depths"]))
    header = ["units", "weight scale s", *[f"MAE x{k}" for k in layers],
              *[f"KL n={d}" for d in s["depths"]], *[f"argmax agree n={d}" for d in s["depths"]]]
    table_rows = [[u, sc, *[layer_mae(u, k, sc) for k in layers], *[net_stat(u, d, sc, "kl") for d in s["depths"]],
                   *[net_stat(u, d, sc, "agree") for d in s["depths"]]]
                  for u in ("01", "pm1") for sc in s["scales"]]
    for r in table_rows:
        print("  " + "  ".join(_report.fmt(v, 3) for v in r))

    # the plot: error against weight scale, one line per layer depth (MAE) or net depth (KL)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True)
    for row, units in enumerate(("01", "pm1")):
        for k in layers:
            axes[row, 0].plot(s["scales"], [layer_mae(units, k, sc) for sc in s["scales"]], "o-", label=f"x{k}")
        for d in s["depths"]:
            axes[row, 1].plot(s["scales"], [net_stat(units, d, sc, "kl") for sc in s["scales"]], "o-",
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
    print(f"wrote {png}")

    deepest = max(layers)
    lo, hi = s["scales"][0], s["scales"][-1]
    mae = {(u, sc): layer_mae(u, deepest, sc) for u in ("01", "pm1") for sc in (lo, hi)}
    kl_hi = {(u, d): net_stat(u, d, hi, "kl") for u in ("01", "pm1") for d in s["depths"]}
    deeper_worse = all(kl_hi[(u, a)] <= kl_hi[(u, b)] for u in ("01", "pm1")
                       for a, b in zip(s["depths"], s["depths"][1:]))
    summary = (
        f"At s = {lo} the deepest hidden layer (x{deepest}) is off by {mae[('01', lo)]:.2g} ({{0,1}} units) / "
        f"{mae[('pm1', lo)]:.2g} (±1) per unit on average, at s = {hi} by {mae[('01', hi)]:.2g} / "
        f"{mae[('pm1', hi)]:.2g}; x1 is exact up to rounding (its parent x^0 is observed). At s = {hi} the class "
        f"posterior's KL is {', '.join(f'{kl_hi[(u, d)]:.2g}' for d in s['depths'] for u in ('01',))} ({{0,1}}) and "
        f"{', '.join(f'{kl_hi[(u, d)]:.2g}' for d in s['depths'] for u in ('pm1',))} (±1) nats for "
        f"n = {', '.join(map(str, s['depths']))}: "
        + ("it grows with every added layer." if deeper_worse else "not monotone in depth at this scale."))
    settings = (f"Settings: dense nets 16 → {'/'.join(map(str, s['widths']))} units per hidden layer → 4 classes, "
                f"n = {', '.join(map(str, s['depths']))} layers, W and b ~ N(0, s²/fan-in), {s['seeds']} seed(s) per "
                f"setting, {s['images']} random binary inputs x^0 per net; exact = enumeration of every layer's "
                f"states. MAE: mean |p_mf(x^k_i = 1) − p(x^k_i = 1 | x^0)| over units, inputs and nets.")
    section = "\n\n".join([settings, _report.table(header, table_rows, 3),
                           f"![error against weight scale]({png.name})", summary])
    return {"section": section, "rows": rows}


# -- part 2 ----------------------------------------------------------------------------------
def part2(s: dict, runs: list[str], threads: int) -> str:
    if not runs:
        return "Part 2 was not run: give trained run folders with `--runs`."
    header = ["run", "images", "KL(anc ‖ mf)", "top-1 agree", "acc mf", "acc ancestral", "class MCSE",
              "fwd MAE x1", "fwd MAE x_{n-1}", "rev pixel MAE", "rev pixel max err", "rev hidden MAE", "seconds"]
    rows, found = [], {}
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
    return "\n\n".join([settings, _report.table(header, rows, 3), summary])


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
                f"reference its exact value by enumeration. IS: {s['is_samples']} samples from the mean-field guide "
                f"(delta-method MCSE). Gibbs: {s['chains']} chains × {s['gibbs_samples']} draws after "
                f"{s['gibbs_warmup']} warm-up sweeps, Rao-Blackwellised means, ArviZ MCSE and bulk ESS (of the worst "
                "unit per image). 'within 3 MCSE': fraction of all unit marginals with |estimate − exact| ≤ 3 MCSE "
                "(+1e-6); the goal is ≥ 0.95. s / ESS: wall-clock seconds of the whole batch per effective "
                "sample of one image (all images run together), median over images.")
    return "\n\n".join([settings, _report.table(header, rows, 3), summary])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; used by the tests)")
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders for part 2")
    p.add_argument("--parts", nargs="*", type=int, default=[1, 2, 3], choices=[1, 2, 3])
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
    if 3 in args.parts:
        _report.write_markdown(args.out / "estimator_quality.md",
                               "Part 3: estimator quality and cost against the exact posterior",
                               [head, part3(s, args.threads)])
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
