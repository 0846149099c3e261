"""How good is the generator really?  The true log-likelihood of the reverse sigmoid belief net by AIS,
with BDMC gaps, beside the paper's mean-field reverse loss and the old K-sample bounds; then its
samples in numbers.

    python analysis/generator_likelihood.py --runs RUN_DIR ... [--quick] [--out analysis/results]
    python analysis/generator_likelihood.py --truth-only [--truth ais_truth.json] --out analysis/results

For each run, on the first N stochastically binarised test digits: annealed importance sampling
(:func:`pyro_dcim.inference.ais_log_likelihood`, from the forward chain) of −log p(x⁰ | y) at the
true class, and of the unconditional −log p(x⁰) = −logsumexp_y [log p(x⁰ | y) + log p(y)] (p(y) the
training class frequencies) on fewer digits; the BDMC gap on digits simulated from the same run
at the same setting (how far AIS can still be from the truth); the K-sample importance bounds
with the forward proposals; and the mean-field reverse loss summed over pixels (eq. 21's reverse
term).  Then 100 generated images per class in each mode: the fraction classified as intended and
the within-class diversity relative to real digits, with one grid per mode.  Output goes to
--out (default ``out/analysis``, untracked).  The report heads with every record of ``--truth``
(AIS at 10³-10⁴ temperatures on many digits, gathered by ``analysis/ais_truth.py``); ``--truth-only``
redoes just that section of an earlier report when records are added, without the run folders.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import _report
import torch
from bdmc_sweep import gap_stderr

from pyro_dcim.allocator import keep_freed_memory
from pyro_dcim.data import load_dataset
from pyro_dcim.generate import MODES
from pyro_dcim.inference import ais_log_likelihood, ais_log_marginal, bdmc, importance_bounds
from pyro_dcim.objectives import class_reverse_nll
from pyro_dcim.plots import sample_figure
from pyro_dcim.quality import sample_quality

FULL = dict(images=10, steps=200, chains=8, marginal_images=4, marginal_steps=100, marginal_chains=4,
            bdmc_images=4, ks=(1, 10, 100, 1000), groups=2, per_class=100)
QUICK = dict(images=3, steps=5, chains=3, marginal_images=2, marginal_steps=3, marginal_chains=2,
             bdmc_images=2, ks=(1, 10), groups=2, per_class=10)


def _mean_se(t: torch.Tensor) -> tuple[float, float]:
    t = t.double()
    return float(t.mean()), float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")


def class_prior(dataset: str, data_dir: str | None, num_classes: int = 10) -> torch.Tensor:
    """p(y): the training class frequencies of ``dataset``."""
    _, y = load_dataset(dataset, "train", data_dir)
    counts = torch.bincount(y, minlength=num_classes).double()
    return counts / counts.sum()


def measure(s: dict, run: _report.Run) -> dict:
    """Every estimator of the run's likelihood at the cheap settings ``s``."""
    print(f"measuring {run.label} ...", flush=True)
    x0, y = run.test_data(s["images"], binarize_mode="sample", seed=0)
    with torch.no_grad():
        mf = class_reverse_nll(run.net, x0, y)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        cond = ais_log_likelihood(run.net, x0, y, s["steps"], s["chains"])
        t1 = time.perf_counter()
        marg = ais_log_marginal(run.net, x0[:s["marginal_images"]], s["marginal_steps"], s["marginal_chains"],
                                class_prior=class_prior(run.dataset, run.data_dir, run.net.num_classes))
        t2 = time.perf_counter()
        gap = bdmc(run.net, s["bdmc_images"], s["steps"], s["chains"], seed=0)
        best = max((importance_bounds(run.net, x0, y, s["ks"], s["groups"], proposal=p)[-1] for p in
                    ("mean_field", "forward")), key=lambda b: float(b.estimate.mean()))
    nll, nll_se = _mean_se(-cond.estimate)
    unc, unc_se = _mean_se(-marg.estimate)
    cond_sub, _ = _mean_se(-cond.estimate[:s["marginal_images"]])
    return dict(run=run.label, objective=run.objective, dataset=run.dataset, nll=nll, nll_se=nll_se,
                nll_mc=float(cond.stderr.pow(2).mean().sqrt() / math.sqrt(len(y))),
                unconditional=unc, unconditional_se=unc_se, conditional_same_digits=cond_sub,
                bdmc_gap=float(gap.gap.mean()), bdmc_gap_max=float(gap.gap.max()),
                k_bound=-float(best.estimate.mean()), k=best.k, k_ess=float(best.ess.mean()),
                mean_field=float(mf.mean()), seconds_conditional=t1 - t0, seconds_unconditional=t2 - t1,
                seconds_bdmc=gap.seconds)


def likelihood(s: dict, runs: list[_report.Run], done: dict[str, dict]) -> tuple[str, list[dict]]:
    """The cheap-settings table; a run whose row is in ``done`` (by label, same settings) is not measured again."""
    rows, results = [], []
    for run in runs:
        row = done.get(run.label) or measure(s, run)
        results.append(row)
        rows.append([run.label, run.dataset, f"{row['nll']:.1f} ± {row['nll_se']:.1f} (MC {row['nll_mc']:.2f})",
                     f"{row['unconditional']:.1f} ± {row['unconditional_se']:.1f}",
                     f"{row['conditional_same_digits']:.1f}",
                     f"{row['bdmc_gap']:.1f} (max {row['bdmc_gap_max']:.1f})",
                     f"{row['k_bound']:.1f} (ESS {row['k_ess']:.2g})", f"{row['mean_field']:.1f}",
                     f"{row['seconds_conditional']:.0f} / {row['seconds_unconditional']:.0f} / "
                     f"{row['seconds_bdmc']:.0f}"])
        print("likelihood: " + " | ".join(str(v) for v in rows[-1]), flush=True)
    header = ["run", "data", "AIS −log p(x⁰ | y)", "AIS −log p(x⁰)", "−log p(x⁰ | y), same digits",
              "BDMC gap (simulated)", f"best −L_K, K = {max(s['ks'])}", "mean-field reverse loss",
              "seconds (cond. / uncond. / BDMC)"]
    return _report.table(header, rows), results


def earlier_rows(path: Path, s: dict) -> dict[str, dict]:
    """The cheap rows of an earlier report at the same settings, by run label (none with --recompute)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if isinstance(old, list):         # the first reports kept only these rows, at the full settings
        old = dict(settings=_settings_record(FULL), cheap=old)
    if old.get("settings") != _settings_record(s):
        return {}
    return {r["run"]: r for r in old.get("cheap", [])}


def _settings_record(s: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in s.items() if k != "per_class"}


def truth(path: Path, runs: list[_report.Run], data_dir: str | None = None) -> tuple[str, list[dict]]:
    """Every run's record in ``ais_truth.json`` (``analysis/ais_truth.py``: AIS at many temperatures on many
    digits), each at its largest number of temperatures, with ``−log p(x⁰) ≤ −log p(x⁰ | y) − log p(y)``
    (``p(x⁰) ≥ p(x⁰ | y) p(y)``, so the truth's conditional figure bounds the unconditional one).  The records
    hold what a row needs; p(y) comes from the training labels of the record's dataset, found through a run of
    ``runs`` at the same path, the record's ``data_dir`` or ``data_dir``."""
    records = json.loads(path.read_text())
    dirs = {r.path.as_posix(): r.data_dir for r in runs}
    best: dict[str, dict] = {}
    for r in records.values():
        if r.get("digits") and (r["run"] not in best or (r["steps"], len(r["digits"])) >
                                (best[r["run"]]["steps"], len(best[r["run"]]["digits"]))):
            best[r["run"]] = r
    rows, results = [], []
    for name, rec in best.items():
        digits = list(rec["digits"].values())
        nll = torch.tensor([-d["estimate"] for d in digits], dtype=torch.float64)
        mc = torch.tensor([d["stderr"] for d in digits], dtype=torch.float64)
        mf = torch.tensor([d["mean_field"] for d in digits], dtype=torch.float64)
        prior = class_prior(rec["dataset"], dirs.get(name) or rec.get("data_dir") or data_dir)
        log_py = prior.log()[torch.tensor([d["label"] for d in digits])]
        (m, se), (u, use) = _mean_se(nll), _mean_se(nll - log_py)
        label = f"{rec['objective']} ({name.removeprefix('runs/')})"
        row = dict(run=label, dataset=rec["dataset"], digits=len(digits), steps=rec["steps"], chains=rec["chains"],
                   nll=m, nll_se=se, nll_mc=float(mc.pow(2).mean().sqrt() / math.sqrt(len(digits))),
                   unconditional_bound=u, unconditional_bound_se=use, mean_field=float(mf.mean()),
                   mean_field_minus_ais_median=float((mf - nll).median()),
                   mean_field_below=int((mf < nll).sum()), seconds=sum(d["seconds"] for d in digits))
        results.append(row)
        rows.append([label, rec["dataset"], len(digits), f"{rec['steps']} × {rec['chains']}",
                     f"{m:.1f} ± {se:.1f} (MC {row['nll_mc']:.2f})", f"{u:.1f} ± {use:.1f}",
                     f"{row['mean_field']:.1f}", f"{row['mean_field_minus_ais_median']:+.1f}",
                     f"{row['mean_field_below']} / {len(digits)}", f"{row['seconds']:.0f}"])
    header = ["run", "data", "digits", "temperatures × chains", "AIS −log p(x⁰ | y)", "−log p(x⁰) at most",
              "mean-field reverse loss", "mean field − AIS (median)", "mean field below AIS", "AIS seconds"]
    return _report.table(header, rows), results


def likelihood_summary(s: dict, results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r['run']}: AIS puts −log p(x⁰ | y) at {r['nll']:.1f} nats or less (a stochastic upper bound "
                     f"on it, within about {r['bdmc_gap']:.0f} nats of the truth by BDMC at this setting), "
                     f"{r['k_bound'] - r['nll']:.0f} nats below the best K-sample bound, and "
                     f"{r['nll'] - r['mean_field']:+.0f} nats from the mean-field reverse loss "
                     f"({r['mean_field']:.0f}).")
    return ("AIS's −log p̂ is a stochastic upper bound on the true −log p (E log p̂ ≤ log p); the BDMC gap on digits "
            "simulated from the same net says how loose it can still be at this number of temperatures. The "
            "mean-field reverse loss is no bound in either direction: the mean field is not the model's "
            "likelihood. " + " ".join(lines))


def quality(s: dict, runs: list[_report.Run], out: Path) -> str:
    rows = []
    for run in runs:
        real, labels = run.test_data(10_000)
        for mode in MODES:
            if mode == "sample-layer" and run.net.num_layers < 2:
                continue
            q = sample_quality(run.net, real, labels, mode, s["per_class"], seed=0)
            grid = out / f"samples_{run.path.name}_{mode}.png"
            sample_figure(run.net, grid, mode, per_class=10, seed=0, title=f"{run.label}: {mode}")
            rows.append([run.label, mode, q.consistency, q.diversity, q.real_diversity, q.relative_diversity,
                         grid.name])
            print("quality: " + "  ".join(_report.fmt(v, 4) for v in rows[-1]))
    header = ["run", "mode", "classified as intended", "within-class distance", "real digits' distance",
              "relative diversity", "grid"]
    return _report.table(header, rows, 3)


TRUTH_TITLE = "## The likelihood by AIS at many temperatures"


def _widest_forward_row(path: Path) -> dict | None:
    rows = [r for r in json.loads(path.read_text()).values() if r["start"] == "forward"] if path.is_file() else []
    return max(rows, key=lambda r: (r["steps"], len(r["lower"]))) if rows else None


def bdmc_note(folder: Path) -> str:
    """What the BDMC sweeps beside the truth records (``bdmc_sweep.json``, the default dense run's, and
    ``bdmc_generative/``, the full-MNIST generative run's) say about the gaps."""
    r, g = _widest_forward_row(folder / "bdmc_sweep.json"), _widest_forward_row(folder / "bdmc_generative" /
                                                                               "bdmc_sweep.json")
    if r is None:
        return "No BDMC gap is recorded beside these records, so every row has unmeasured slack."
    also = (f" and at {g['steps']} temperatures that of the full-MNIST generative run is {g['gap_mean']:.2f} nats "
            f"(max {g['gap_max']:.2f}, {len(g['lower'])} digits; `bdmc_generative/`)" if g else "")
    return (f"At {r['steps']} temperatures × {r['chains']} chains the BDMC gap of the default dense run (bundled "
            f"subset, (21)) is {r['gap_mean']:.2f} ± {gap_stderr(r):.2f} nats (max {r['gap_max']:.2f}) on "
            f"{len(r['lower'])} simulated digits (`bdmc_sweep.md`){also}; the other runs' gaps at their settings "
            "are not measured, so their "
            "rows are stochastic upper bounds with unmeasured slack.")


def truth_section(args: argparse.Namespace, runs: list[_report.Run]) -> tuple[list[str], list[dict]]:
    """The report's first section, from ``--truth``'s records (empty without them)."""
    table, results = truth(args.truth, runs, args.data_dir) if args.truth.is_file() else ("", [])
    if not results:
        return [], []
    text = (f"From `{args.truth.name}` (`analysis/ais_truth.py`): AIS from the forward chain, sigmoid schedule, on "
            "the first *digits* binarised test digits (one Bernoulli draw per pixel, seed 0), at the true class. "
            + bdmc_note(args.truth.parent) + " *± over digits*: the standard error of the mean over digits; *MC*: "
            "the Monte Carlo error of that mean. *−log p(x⁰) at most*: −log p(x⁰ | y) − log p(y) per digit (p(y) "
            "the training class frequencies), an upper bound because p(x⁰) ≥ p(x⁰ | y) p(y); the true class "
            "usually carries nearly all of p(x⁰), so the bound is tight to well under log 10 nats unless the digit "
            "is ambiguous to the generator. The mean-field reverse loss is eq. (21)'s reverse term summed over "
            "pixels on the same digits: no bound either way.")
    return [TRUTH_TITLE, text, table], results


def redo_truth(args: argparse.Namespace) -> int:
    """``--truth-only``: replace the AIS-truth section (and the json's ``truth``) of --out's report, keeping
    the rest as it was measured; the records are hours of CPU gathered apart from the cheap rows."""
    md, js = args.out / "generator_likelihood.md", args.out / "generator_likelihood.json"
    if not (md.is_file() and js.is_file()):
        raise SystemExit(f"generator_likelihood: --truth-only needs an earlier report in {args.out}")
    sections, results = truth_section(args, [_report.load_run(r) for r in args.runs])
    if not results:
        raise SystemExit(f"generator_likelihood: no AIS-truth records in {args.truth}")
    sections[1] = f"This section: {_report.command_line()}. " + sections[1]
    head, *parts = md.read_text().split("\n## ")
    kept = ["## " + q.strip("\n") for q in parts if not q.startswith(("The likelihood at", TRUTH_TITLE[3:]))]
    md.write_text("\n\n".join([head.strip("\n"), *sections, *kept]) + "\n")
    record = json.loads(js.read_text())
    record["truth"] = results
    js.write_text(json.dumps(record, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=[], help="trained run folders (e.g. the dense (21) and (22) runs)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; used by the tests)")
    p.add_argument("--images", type=int, default=None, help="binarised test digits per run for AIS")
    p.add_argument("--steps", type=int, default=None, help="AIS temperatures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--truth", type=Path, default=Path(__file__).parent / "results" / "ais_truth.json",
                   help="ais_truth.json (analysis/ais_truth.py): its records of these runs head the report")
    p.add_argument("--truth-only", action="store_true",
                   help="only redo the section of --truth's records in --out's report (no run folders needed)")
    p.add_argument("--data-dir", default=None,
                   help="where a truth record's dataset lies when neither a run nor the record says (for p(y))")
    p.add_argument("--recompute", action="store_true",
                   help="measure every run again (default: rows of --out's earlier report at these settings are kept)")
    p.add_argument("--no-quality", dest="quality", action="store_false", help="skip the sample-quality section")
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    args = p.parse_args(argv)
    if not args.runs and not args.truth_only:
        p.error("give --runs RUN_DIR ... (or --truth-only to redo only the AIS-truth section)")
    torch.set_num_threads(args.threads)
    if args.truth_only:
        return redo_truth(args)
    s = dict(QUICK if args.quick else FULL)
    s["images"] = args.images or s["images"]
    s["steps"] = args.steps or s["steps"]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [_report.load_run(r) for r in args.runs]
    head = (f"Generated by {_report.command_line()} ({'quick (tiny)' if args.quick else 'full'} settings). "
            f"{_report.machine_note(args.threads)}")
    json_path = args.out / "generator_likelihood.json"
    lik_table, results = likelihood(s, runs, {} if args.recompute else earlier_rows(json_path, s))
    settings = (f"Settings: the first {s['images']} test digits of each run's dataset, binarised stochastically (one "
                f"Bernoulli draw per pixel, seed 0). AIS −log p(x⁰ | y): {s['steps']} temperatures (sigmoid "
                f"schedule) × {s['chains']} chains from the forward chain q(h | x⁰), at the true class; ± over "
                f"digits, MC: the Monte Carlo error of the mean. AIS −log p(x⁰): the first {s['marginal_images']} "
                f"digits, {s['marginal_steps']} temperatures × {s['marginal_chains']} chains for each of the 10 "
                "classes, p(y) = the training class frequencies; the next column is the class-conditional figure on "
                f"those same digits. BDMC gap: {s['bdmc_images']} digits simulated from the run's reverse model, "
                f"{s['steps']} temperatures × {s['chains']} chains each way. Best −L_K: the K-sample importance "
                f"bound with the better of the mean-field guide and the forward chain as proposal ({s['groups']} × "
                f"{max(s['ks'])} samples per digit). Mean-field reverse loss: eq. (21)'s reverse term summed over "
                "pixels, −Σ_j log Bernoulli(x⁰_j; ν⁰_j) with ν the reverse mean-field pass from the class.")
    orientation = ("For orientation: published unconditional sigmoid belief nets on binarised MNIST reach "
                   "about 99.8 nats (NVIL, 200-200), 93.6 (VIMCO) and 84.8 (12-layer bidirectional Helmholtz "
                   "machine). Their test sets are the whole 10,000 digits; these rows use a few digits and an AIS "
                   "setting whose BDMC gap is stated, so read them as upper bounds with that slack. The "
                   "unconditional column runs a cheaper AIS than the conditional one; where it exceeds the "
                   "conditional figure on the same digits plus −log p(y) (about 2.3 nats), the excess is AIS slack, "
                   "not the model.")
    sections = [head]
    truth_sections, truth_results = truth_section(args, runs)
    sections += truth_sections
    results_truth = {r["run"]: r for r in truth_results}
    sections += ["## Cheaper settings, every estimator" if results_truth else "", settings, lik_table,
                 likelihood_summary(s, results), orientation]
    if args.quality:
        quality_settings = (f"Sample quality: {s['per_class']} generated images per class in each mode — *mean*: "
                            "reverse mean field from the class; *sample-layer*: x^{n-1} sampled given the class, then "
                            "mean field down; *ancestral*: every layer and the image sampled from the reverse SBN "
                            "(binary images). Classified as intended: by the run's own forward model. Distance: mean "
                            "Euclidean distance between two images of one class, averaged over classes; real digits: "
                            "the test digits (binarised once for the ancestral mode, whose samples are binary). "
                            "Relative diversity = generated / real.")
        sections += ["## Sample quality in numbers", quality_settings, quality(s, runs, args.out)]
    _report.write_markdown(args.out / "generator_likelihood.md", "The generator as a probabilistic model", sections)
    json_path.write_text(json.dumps(dict(settings=_settings_record(s), truth=list(results_truth.values()),
                                         cheap=results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
