"""Labels optional: what each run's classifier and generator know about the class, and what an epoch cost.

    python analysis/semi_supervised.py RUN_DIR [RUN_DIR ...] [--images 2000] [--particles 50] [--out DIR]

Per run: its labels setting, the forward classifier's test accuracy (``summary.json``), the accuracy of the
generator's own posterior ``argmax_c π_c`` with ``π = Σ_s w̃_s p(c | x^0, h_s)`` (``--particles`` draws of the
forward chain, the class summed exactly; test digits binarised once with seed 0), the agreement of the two,
the K = 5 bound on ``-log p(x^0)`` that training uses with the class summed and with it sampled (same
digits, nats), and the training seconds per image (the epochs' seconds over the images an epoch visits).  Writes
``semi_supervised.md`` to ``--out`` (default ``out/analysis``) and one JSON record per run under ``OUT/runs``
(``semi-RUN.json``), which the next call reuses (``--recompute`` to evaluate again): a table can then list runs
whose folders are gone.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import _report
import torch

from pyro_dcim.semi_supervised import UNLABELLED, mixed_particles
from pyro_dcim.training.batches import epoch_order, load_splits
from pyro_dcim.training.config import TrainConfig
from pyro_dcim.training.metrics import cluster_accuracy


@torch.no_grad()
def generator_posterior(net, x0: torch.Tensor, particles: int, chunk: int = 200) -> torch.Tensor:
    """``π`` of every image, ``(images, classes)``: the class posterior of the generator given by the weights."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, len(x0), chunk):
        xb = x0[i:i + chunk]
        out.append(mixed_particles(net, xb, torch.full((len(xb),), UNLABELLED), particles, "sum", g).posterior)
    return torch.cat(out)


@torch.no_grad()
def training_bounds(net, x0: torch.Tensor, particles: int = 5, chunk: int = 200) -> dict[str, float]:
    """The K-particle bound on ``-log p(x^0)`` that training sees, class summed and sampled (mean over images)."""
    out = {}
    for estimate in ("sum", "sample"):
        g, total = torch.Generator().manual_seed(0), 0.0
        for i in range(0, len(x0), chunk):
            xb = x0[i:i + chunk]
            log_w = mixed_particles(net, xb, torch.full((len(xb),), UNLABELLED), particles, estimate, g).log_w
            total += float(-(log_w.logsumexp(0) - math.log(particles)).sum())
        out[estimate] = total / len(x0)
    return out


def seconds_per_image(path: Path, cfg: TrainConfig) -> float:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    data = load_splits(cfg, torch.device("cpu"))
    images = len(epoch_order(len(data.train_x), cfg.seed, 0, data.labelled, cfg.labelled_share, cfg.batch_size))
    return sum(r["seconds"] for r in rows) / (len(rows) * images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--particles", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    p.add_argument("--recompute", action="store_true", help="evaluate runs whose record is already in OUT/runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.runs:
        record = args.out / "runs" / f"semi-{Path(path).name}.json"
        if record.is_file() and not args.recompute:
            rows.append(json.loads(record.read_text())["row"])
            continue
        rows.append(evaluate_run(path, args))
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"row": rows[-1], "settings": {"images": args.images,
                                                                    "particles": args.particles}}, indent=2) + "\n")
        print(rows[-1], flush=True)
    # over label draws: the runs that differ only in their seed
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row[1], row[2], *row[4:9]), []).append(100 * (1 - row[9]))
    summary_rows = [[*key, len(errors), f"{statistics.mean(errors):.2f}",
                     f"{statistics.stdev(errors):.2f}" if len(errors) > 1 else "–"] for key, errors in groups.items()]
    settings = ["labelled share", "unlabelled class", "unlabelled class weight", "class threshold", "p(y)"]
    header = ["run", "objective", "labels", "seed", *settings,
              "test acc (all test digits)", f"forward acc ({args.images} binarised)", "generator posterior acc",
              "agreement", "K=5 bound -log p(x0), class summed", "same, class sampled", "ms / image"]
    _report.write_markdown(args.out / "semi_supervised.md", "Labels optional: classifier and generator", [
        f"Command: {_report.command_line()}",
        "Test error (%) over seeds (each seed draws the labels, the weights and the data order; an unsupervised "
        "run's error is 1 − its cluster accuracy):",
        _report.table(["objective", "labels", *settings, "runs", "test error % mean", "s.d."], summary_rows),
        "Per run (accuracies of an unsupervised run are cluster accuracies, the best one-to-one map of its "
        "components to the classes):", _report.table(header, rows),
        "The generator columns of a discriminative run read its untrained (tied) reverse chain: they only show "
        "that nothing was learned there.", _report.machine_note(args.threads)])


def evaluate_run(path: str, args: argparse.Namespace) -> list:
    """One row of the per-run table."""
    run = _report.load_run(path)
    cfg = TrainConfig.from_dict(_report.read_config(run.path))
    summary = json.loads((run.path / "summary.json").read_text())
    x0, y = run.test_data(args.images, binarize_mode="sample", seed=0)
    post = generator_posterior(run.net, x0, args.particles).argmax(-1)
    forward = run.net(x0).argmax(-1)
    bounds = training_bounds(run.net, x0)
    partial = cfg.labels is not None  # the semi-supervised settings act only then, and only on generative terms
    generative = partial and cfg.objective != "discriminative"
    # unsupervised (--labels 0): components are matched to classes one-to-one (as fit's summary does)
    acc = cluster_accuracy if cfg.labels == 0 else (lambda a, b: float((a == b).double().mean()))
    labels = f"0 ({run.net.num_classes} components)" if cfg.labels == 0 else cfg.labels if partial else "all"
    return [run.path.name, cfg.objective, labels, cfg.seed,
            (cfg.labelled_share or "–") if partial and cfg.labels else "–",
            cfg.unlabelled_class if generative else "–",
            cfg.unlabelled_class_weight if generative else "–",
            cfg.unlabelled_class_threshold if generative else "–",
            cfg.class_prior if generative else "–", summary["test_acc"],
            acc(forward, y), acc(post, y), float((post == forward).double().mean()), bounds["sum"],
            bounds["sample"], 1e3 * seconds_per_image(run.path, cfg)]


if __name__ == "__main__":
    main()
