"""Writing styles with variety (issue 24 §4): which sampled layers give class-consistent *and* varied digits?

    python analysis/writing_styles.py RUN_DIR [--per-class 100] [--classifier FILE] [--out DIR]

For the run's generator, one row per generation mode: the paper's Fig. 3 mode (``x^{n-1}`` sampled from the
class, mean field below; ``draw --mode sample-layer``), the same with every hidden layer down to ``x^K``
sampled and the mean field only below it (``draw --mode sample-layer --layer K``, K = n-2 … 1), each also at
``--temperatures`` (the sampled layers drawn from ``sigmoid(a / T)``: ``draw --temperature T``), and ancestral
samples (every layer and the pixels sampled).  Columns as in ``generator_comparison.md``: class consistency by
the run's own forward model and by the independent CNN (``analysis/mnist_classifier.py``), and within-class
diversity over that of real test digits (binarised for ancestral samples, intensities otherwise).  Writes
``writing_styles.md`` and one sample grid per mode to ``--out`` (default ``out/analysis``); a minute or two
on one core for the dense net.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _report
import torch

from pyro_dcim.classifier import classifier_consistency, load_classifier
from pyro_dcim.cli.draw import temperature_setting
from pyro_dcim.data import load_dataset
from pyro_dcim.generate import class_grid, generate, predict
from pyro_dcim.plots import plot_sample_grid
from pyro_dcim.quality import sample_quality


def modes(num_layers: int, temperatures: list[str] = ()) -> list[tuple[str, str, int | None, str]]:
    """(name, mode, layer, temperature as ``draw --temperature`` reads it): Fig. 3's layer, every deeper choice of
    the lowest sampled layer, each also at the given temperatures where they name only sampled layers, then
    ancestral."""
    rows = []
    for k in range(num_layers - 1, 0, -1):
        base = (f"sample-layer, x^{k} sampled (Fig. 3)" if k == num_layers - 1
                else f"sample-layer --layer {k}: x^{num_layers - 1}..x^{k} sampled")
        rows.append((base, "sample-layer", k, "1"))
        for t in temperatures:
            named = temperature_setting(t)
            if isinstance(named, dict) and min(named) < k:
                continue   # tempers a layer this mode does not sample
            rows.append((f"{base}, --temperature {t}", "sample-layer", k, t))
    return rows + [("ancestral: every layer and the pixels sampled", "ancestral", None, "1")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--classifier", type=Path, default=_report.DEFAULT_OUT / "mnist_cnn.pt")
    p.add_argument("--temperatures", nargs="*", default=[], metavar="T|K:T[,K:T]",
                   help="also every sample-layer row at these temperatures (draw --temperature's syntax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = _report.load_run(args.run)
    net = run.net
    classifier, accuracy = load_classifier(args.classifier) if args.classifier.is_file() else (None, None)
    x_test, y_test = load_dataset(run.dataset, "test", run.data_dir)
    classes = class_grid(net.num_classes, args.per_class)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, mode, layer, text in modes(net.num_layers, args.temperatures):
        t = temperature_setting(text)
        q = sample_quality(net, x_test, y_test, mode, per_class=args.per_class, seed=args.seed, layer=layer,
                           temperature=t)
        images = generate(net, classes, mode, layer=layer, seed=args.seed, temperature=t)   # those judged
        indep = classifier_consistency(classifier, images, classes) if classifier else float("nan")
        rows.append([name, f"{q.consistency:.3f}", f"{indep:.3f}", f"{q.relative_diversity:.3f}"])
        print(rows[-1], flush=True)
        shown = class_grid(net.num_classes, 10)
        pics = generate(net, shown, mode, layer=layer, seed=args.seed, temperature=t)
        pred, prob = predict(net, pics)
        tag = (mode if layer is None else f"{mode}-K{layer}") + ("" if text == "1" else
                                                               "-T" + text.replace(":", "_").replace(",", "-"))
        plot_sample_grid(pics, shown, pred, prob, args.out / f"writing_styles_{run.path.name}_{tag}.png",
                         title=f"{run.path.name}: {name}")
    judge = (f"the independent plain CNN (MNIST test accuracy {accuracy:.4f})" if classifier
             else "no independent CNN (file missing: NaN)")
    _report.write_markdown(args.out / "writing_styles.md", f"Writing styles of {run.path.name}", [
        f"Command: {_report.command_line()}",
        f"{args.per_class} images per class and mode, seed {args.seed}; 'own' = the run's forward model, 'CNN' = "
        f"{judge}; 'diversity' = mean within-class pairwise distance over that of real test digits.",
        _report.table(["mode", "consistency (own)", "consistency (CNN)", "diversity"], rows),
        _report.machine_note(args.threads)])


if __name__ == "__main__":
    main()
