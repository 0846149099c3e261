"""``python -m pyro_dcim.draw RUN_DIR``: draw a grid of generated digits from a trained run.

    python -m pyro_dcim.draw runs/dense-21 --per-class 10 --mode sample-layer

writes ``RUN_DIR/samples_<mode>.png`` (or ``--out FILE``): one row per class, labelled with the
class it was generated from, each image titled with the forward model's predicted class and its
probability, and prints the class consistency: the fraction of generated images that the
run's own classifier (its forward model) assigns to the class they were generated from.
``draw`` reads only the checkpoint, which holds the net's spec and parameters; ``config.json``
is not needed and not read.  ``python -m pyro_dcim.sample`` is the same command under its
former name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence, Union

from ..classifier import classifier_consistency, load_classifier
from ..generate import MODES, class_consistency, class_grid, generate, images_per_class, mean_pairwise_distance, predict
from ..plots import SAMPLE_TITLES, plot_sample_grid
from ..training.checkpoint import CheckpointError, load_model
from ..training.config import ConfigError, resolve_device
from ..training.signals import Stopped, stop_on_signals
from .errors import EXIT_OK, OneLineParser, report, report_interrupt
from .output import OutputError, prepare_output_file

__all__ = ["main", "build_parser", "MAX_PER_CLASS"]

PROG = "python -m pyro_dcim.draw"
#: a row of 100 digits is already 3,000 pixels wide; more is no picture (and minutes of sampling)
MAX_PER_CLASS = 100


def temperature_setting(text: str) -> Union[float, dict[int, float]]:
    """``"1.2"`` (every sampled layer) or ``"2:1.2,1:0.9"`` (per layer), as :func:`generate` takes it."""
    try:
        if ":" not in text:
            return float(text)
        pairs = [item.split(":") for item in text.split(",")]
        return {int(k): float(t) for k, t in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T or K:T[,K:T], got {text!r}") from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0],
                      epilog="class consistency: the fraction of generated images that the run's forward model "
                             "classifies as the class they were generated from (1.0: every image looks like its "
                             "class to the net itself). config.json is not read: the checkpoint holds the net.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (or a checkpoint .pt file)")
    p.add_argument("--per-class", type=int, default=10, help=f"images per class in the sampling modes, 1 to "
                   f"{MAX_PER_CLASS} (default 10; the mean mode is deterministic and draws one per class)")
    p.add_argument("--mode", choices=MODES, default="mean", help="mean: reverse mean field from the class "
                   "(Fig. 2); sample-layer: sample x^{n-1} given the class, then mean field (Fig. 3); "
                   "ancestral: the reverse Pyro model, all layers sampled (default mean)")
    p.add_argument("--layer", type=int, default=None, help="sampled layer K in sample-layer mode (default n-1)")
    p.add_argument("--temperature", type=temperature_setting, default=1.0, metavar="T|K:T[,K:T]",
                   help="sample-layer: draw the sampled layers from sigmoid(a / T), or only layer K (e.g. 2:1.2 "
                   "tempers x^2 alone); above 1 gives more varied digits at some cost in class consistency "
                   "(default 1, the model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling modes (default 0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--out", metavar="FILE", help="the PNG to write (default RUN_DIR/samples_<mode>.png)")
    p.add_argument("--classifier", metavar="FILE", help="an independent classifier (analysis/mnist_classifier.py): "
                   "also print the fraction it assigns to the intended class")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else (run_dir if run_dir.is_dir() else run_dir.parent) / f"samples_{args.mode}.png"
    try:
        with stop_on_signals():   # SIGTERM too: one line and 143; the PNG is written whole or not at all
            try:
                if not 1 <= args.per_class <= MAX_PER_CLASS:
                    raise ConfigError(f"--per-class must be between 1 and {MAX_PER_CLASS}, got {args.per_class} "
                                      f"(a grid row of {MAX_PER_CLASS} digits is already 3,000 pixels wide)")
                device = resolve_device(args.device)
                net = load_model(args.run_dir, map_location=device).eval()
                prepare_output_file(out)   # before generating: a bad --out costs nothing
                classes = class_grid(net.num_classes, images_per_class(args.mode, args.per_class), device)
                images = generate(net, classes, args.mode, layer=args.layer, seed=args.seed,
                                  temperature=args.temperature)
                judge = load_classifier(args.classifier, map_location=device) if args.classifier else None
                pred, prob = predict(net, images)
                plot_sample_grid(images, classes, pred, prob, out, title=SAMPLE_TITLES[args.mode])
            except (CheckpointError, ConfigError, OutputError, ValueError, OSError) as e:
                return report(prog, e)
    except Stopped as e:
        return report_interrupt(prog, "", "nothing was written", signum=e.signum)
    # the mean mode draws one image per class, so there is no spread within a class to measure
    spread = ("none (the mean mode is deterministic: one image per class)" if args.mode == "mean"
              else f"{mean_pairwise_distance(images, classes):.2f}")
    print(f"wrote {out}: {len(images)} images, class consistency {class_consistency(net, images, classes):.3f} "
          f"(the fraction the net classifies as their class), mean within-class distance {spread}")
    if judge is not None:
        classifier, accuracy = judge
        print(f"independent classifier (MNIST test accuracy {accuracy:.4f}): class consistency "
              f"{classifier_consistency(classifier, images, classes):.3f}")
    return EXIT_OK
