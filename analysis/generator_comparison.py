"""Which objective trains the tied network into a generator worth sampling from?

    python analysis/generator_comparison.py --runs RUN_DIR ... [--classifier FILE] [--out analysis/results]

One row per run folder (objectives, and ``--untie``): validation/test accuracy of the forward
model; the reverse model's true likelihood of binarised test digits by AIS, class-conditional
``-log p(x^0 | y)`` and unconditional ``-log p(x^0)`` (uniform ``p(y)``), both stochastic lower
bounds on ``log p`` (upper bounds on these nats) whose BDMC gap this script does not measure; the
mean-field reverse loss per pixel that (21) trains; for ancestral and sampled-layer generation the
class consistency judged by the run's own forward model and by an independent plain CNN, and the
within-class diversity relative to real test digits; a memorisation check (nearest training digit
of ancestral samples against that of real test digits); and the seconds per training epoch.
Writes ``generator_comparison.md``, one JSON record per run under ``runs/`` (reused on the next call
unless ``--recompute``, so runs can be evaluated as they finish) and a sample grid per run and mode.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import _report
import torch

from pyro_dcim.classifier import classifier_consistency, load_classifier
from pyro_dcim.data import binarize, load_dataset
from pyro_dcim.generate import class_grid, generate, predict
from pyro_dcim.inference import ais_log_likelihood, ais_log_marginal
from pyro_dcim.objectives import OBJECTIVES, class_reverse_nll
from pyro_dcim.plots import SAMPLE_TITLES, plot_sample_grid
from pyro_dcim.quality import sample_quality
from pyro_dcim.training.config import objective_defaults
from pyro_dcim.training.runs import read_config

MODES = ("ancestral", "sample-layer")


#: the wake-phi weight each likelihood objective uses unless its config sets one
WAKE_PHI = {name: OBJECTIVES[name].defaults["wake_phi_weight"] for name in ("rws", "generative")}


def label(path: Path, config: dict) -> str:
    name = config.get("objective", path.name)
    extra = []
    if config.get("objective") in ("rws", "wake-sleep", "generative"):
        extra.append(f"K={config.get('particles')}")
    if config.get("objective") != "discriminative":
        extra.append(f"w={config.get('reverse_weight'):g} {config.get('reverse_reduction')}")
    if config.get("objective") in WAKE_PHI:
        phi = config.get("wake_phi_weight")
        extra.append(f"wake-φ {WAKE_PHI[config['objective']] if phi is None else phi:g}")
    if config.get("sleep_weight"):
        extra.append(f"sleep {config['sleep_weight']:g}")
    if config.get("code_weight"):
        extra.append(f"code-weight {config['code_weight']:g}")
    if config.get("labels") is not None:
        extra.append(f"--labels {config['labels']}")
    if config.get("warm_start_epochs") or config.get("ramp_epochs"):
        extra.append(f"warm start {config.get('warm_start_epochs', 0):g} + ramp {config.get('ramp_epochs', 0):g} ep.")
    if config.get("approximation", "first-order") != "first-order":
        extra.append(config["approximation"])
    if bool(config.get("untie")) != objective_defaults(config.get("objective"))["untie"]:
        extra.append("--untie" if config.get("untie") else "--no-untie")
    return name + (f" ({', '.join(extra)})" if extra else "")


@torch.no_grad()
def nearest_distance(images: torch.Tensor, reference: torch.Tensor, chunk: int = 250) -> torch.Tensor:
    """Euclidean distance of each image to its nearest reference image."""
    ref = reference.flatten(1)
    return torch.cat([torch.cdist(images[i:i + chunk].flatten(1), ref).min(1).values
                      for i in range(0, len(images), chunk)])


def evaluate_run(path: Path, args, classifier) -> dict:
    run = _report.load_run(path)
    # the memorisation reference: every training-split digit of the run's dataset, binarised once
    train_bits = binarize(load_dataset(run.dataset, "train", run.data_dir)[0], "sample", seed=1)
    net, config = run.net, read_config(path)
    summary = json.loads((path / "summary.json").read_text())
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    x_test, y_test = load_dataset(run.dataset, "test", run.data_dir)
    bits = binarize(x_test, "sample", seed=0)                 # one fixed binarisation of the test digits
    row = {"run": path.name, "label": label(path, config), "tied": net.tied, "val_acc": summary["val_acc"],
           "test_acc": summary["test_acc"], "seconds_per_epoch": sum(m["seconds"] for m in metrics) / len(metrics),
           "epochs": summary["epochs"]}
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    row.update(ais_nll_cond=None, ais_nll_cond_se=None, ais_mc_se_cond=None, ais_nll_marg=None, ais_nll_marg_se=None)
    if args.images:   # 0: no AIS (the paper's CNN on a CPU: seconds per temperature and digit)
        ais = ais_log_likelihood(net, bits[:args.images], y_test[:args.images], args.steps, args.chains)
        est = -ais.estimate
        row["ais_nll_cond"], row["ais_nll_cond_se"] = float(est.mean()), float(est.std() / math.sqrt(len(est)))
        row["ais_mc_se_cond"] = float(ais.stderr.pow(2).mean().sqrt())
    if args.marginal_images:
        marg = ais_log_marginal(net, bits[:args.marginal_images], args.steps, args.chains)
        est = -marg.estimate
        row["ais_nll_marg"], row["ais_nll_marg_se"] = float(est.mean()), float(est.std() / math.sqrt(len(est)))
    row["ais_seconds"] = time.perf_counter() - t0
    with torch.no_grad():
        row["mean_field_reverse_per_pixel"] = float(class_reverse_nll(net, x_test, y_test).mean() / net.num_pixels)
    for mode in MODES:
        q = sample_quality(net, x_test, y_test, mode, per_class=args.per_class, seed=args.seed)
        classes = class_grid(net.num_classes, args.per_class)
        images = generate(net, classes, mode, seed=args.seed)     # the same images sample_quality judged
        key = mode.replace("-", "_")
        row[f"{key}_own"] = q.consistency
        row[f"{key}_indep"] = classifier_consistency(classifier, images, classes) if classifier else None
        row[f"{key}_diversity"] = q.relative_diversity
        if mode == "ancestral":
            n = min(len(images), args.memorise)
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
            gen_d = nearest_distance(images[pick], train_bits).median()
            real_d = nearest_distance(bits[:n], train_bits).median()
            row["nearest_train_ratio"] = float(gen_d / real_d)
        shown = class_grid(net.num_classes, 10)
        pics = generate(net, shown, mode, seed=args.seed)
        pred, prob = predict(net, pics)
        plot_sample_grid(pics, shown, pred, prob, args.out / f"generator_comparison_{path.name}_{mode}.png",
                         title=f"{row['label']}: {SAMPLE_TITLES[mode]}")
    return {"config": config, "summary": summary, "comparison": row}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--classifier", type=Path, default=_report.DEFAULT_OUT / "mnist_cnn.pt",
                   help="the independent CNN (analysis/mnist_classifier.py); skipped when absent")
    p.add_argument("--images", type=int, default=20, help="binarised test digits for AIS -log p(x0 | y) (0: none)")
    p.add_argument("--marginal-images", type=int, default=10,
                   help="test digits for AIS -log p(x0) (10 AIS runs each; 0: none)")
    p.add_argument("--steps", type=int, default=100, help="AIS temperatures")
    p.add_argument("--chains", type=int, default=8, help="AIS chains per image")
    p.add_argument("--per-class", type=int, default=100, help="generated images per class and mode")
    p.add_argument("--memorise", type=int, default=500, help="ancestral samples checked against the training set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    p.add_argument("--recompute", action="store_true", help="evaluate runs whose record is already in OUT/runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    classifier, classifier_acc = load_classifier(args.classifier) if args.classifier.is_file() else (None, None)
    records = []
    for path in args.runs:
        record = args.out / "runs" / f"generator-{path.name}.json"
        if record.is_file() and not args.recompute:   # evaluated before (runs are evaluated as they finish)
            records.append(json.loads(record.read_text()))
            continue
        print(f"evaluating {path} ...", flush=True)
        rec = evaluate_run(path, args, classifier)
        rec["settings"] = {k: getattr(args, k) for k in ("images", "marginal_images", "steps", "chains", "per_class",
                                                         "memorise", "seed")}
        records.append(rec)
        record.parent.mkdir(exist_ok=True)
        record.write_text(json.dumps(rec, indent=2) + "\n")
    rows = [{**r["comparison"], "label": label(Path(r["comparison"]["run"]), r["config"])} for r in records]
    header = ["objective", "val acc", "test acc", "AIS -log p(x0|y)", "± s.e.", "AIS -log p(x0)", "± s.e.",
              "MF rev/px", "anc. own", "anc. CNN", "anc. div.", "NN ratio", "s-l own", "s-l CNN", "s-l div.",
              "s/epoch"]
    body = [[r["label"], r["val_acc"], r["test_acc"], r["ais_nll_cond"], r["ais_nll_cond_se"], r["ais_nll_marg"],
             r["ais_nll_marg_se"], r["mean_field_reverse_per_pixel"], r["ancestral_own"], r["ancestral_indep"],
             r["ancestral_diversity"], r["nearest_train_ratio"], r["sample_layer_own"], r["sample_layer_indep"],
             r["sample_layer_diversity"], r["seconds_per_epoch"]] for r in rows]
    ais_text = (f"AIS: the first {args.images} binarised test digits (one Bernoulli draw per pixel, seed 0) for "
                f"-log p(x0 | y), the first {args.marginal_images} for -log p(x0) (uniform p(y)), {args.steps} "
                f"temperatures, {args.chains} chains, start from the forward chain; '± s.e.' is over images. "
                "AIS gives stochastic lower bounds on log p, so these nats are upper bounds; with so few "
                "temperatures the BDMC gap is not measured here and may be large. "
                if args.images or args.marginal_images else "AIS: not run (--images 0 --marginal-images 0). ")
    settings = (ais_text + "Samples: "
                f"{args.per_class} per class and mode (seed {args.seed}); 'own' = the run's forward model, 'CNN' = "
                f"the independent plain CNN (MNIST test accuracy {_report.fmt(classifier_acc)}), 'div.' = mean "
                "within-class pairwise distance over that of real test digits (binarised for ancestral), "
                "'NN ratio' = median distance of ancestral samples to their nearest binarised training digit "
                "over the same for real binarised test digits (< 1: closer than real digits, memorising). "
                "MF rev/px: the mean-field reverse loss -log p(x0 | y) per pixel on test intensities.")
    _report.write_markdown(args.out / "generator_comparison.md", "Generator comparison by objective", [
        _report.command_line(), settings, _report.table(header, body, digits=4),
        _report.machine_note(args.threads)])


if __name__ == "__main__":
    main()
