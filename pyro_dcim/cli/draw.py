"""``python -m pyro_dcim.draw RUN_DIR``: draw a grid of generated digits from a trained run.

    python -m pyro_dcim.draw runs/dense-21 --per-class 10 --mode sample-layer

writes ``RUN_DIR/samples_<mode>.png`` (or ``--out FILE``): one row per class, each image
titled with the forward model's predicted class and its probability, and prints the
class consistency (the fraction of images classified as their intended class).
``python -m pyro_dcim.sample`` is the same command under its former name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ..classifier import classifier_consistency, load_classifier
from ..generate import MODES, class_consistency, class_grid, generate, images_per_class, mean_pairwise_distance, predict
from ..plots import SAMPLE_TITLES, plot_sample_grid
from ..training.checkpoint import CheckpointError, load_model
from ..training.config import ConfigError, resolve_device
from .errors import EXIT_OK, OneLineParser, report

__all__ = ["main", "build_parser"]

PROG = "python -m pyro_dcim.draw"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (or a checkpoint .pt file)")
    p.add_argument("--per-class", type=int, default=10, help="images per class in the sampling modes (default "
                   "10; the mean mode is deterministic and draws one per class)")
    p.add_argument("--mode", choices=MODES, default="mean", help="mean: reverse mean field from the class "
                   "(Fig. 2); sample-layer: sample x^{n-1} given the class, then mean field (Fig. 3); "
                   "ancestral: the reverse Pyro model, all layers sampled (default mean)")
    p.add_argument("--layer", type=int, default=None, help="sampled layer K in sample-layer mode (default n-1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling modes (default 0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--out", metavar="FILE", help="the PNG to write (default RUN_DIR/samples_<mode>.png)")
    p.add_argument("--classifier", metavar="FILE", help="an independent classifier (analysis/mnist_classifier.py): "
                   "also print the fraction it assigns to the intended class")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.per_class < 1:
            raise ConfigError(f"--per-class must be >= 1, got {args.per_class}")
        device = resolve_device(args.device)
        net = load_model(args.run_dir, map_location=device).eval()
        classes = class_grid(net.num_classes, images_per_class(args.mode, args.per_class), device)
        images = generate(net, classes, args.mode, layer=args.layer, seed=args.seed)
        judge = load_classifier(args.classifier, map_location=device) if args.classifier else None
    except (CheckpointError, ConfigError, ValueError, OSError) as e:
        return report(prog, e)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else (run_dir if run_dir.is_dir() else run_dir.parent) / f"samples_{args.mode}.png"
    pred, prob = predict(net, images)
    plot_sample_grid(images, classes, pred, prob, out, title=SAMPLE_TITLES[args.mode])
    print(f"wrote {out}: {len(images)} images, class consistency {class_consistency(net, images, classes):.3f}, "
          f"mean within-class distance {mean_pairwise_distance(images, classes):.2f}")
    if judge is not None:
        classifier, accuracy = judge
        print(f"independent classifier (MNIST test accuracy {accuracy:.4f}): class consistency "
              f"{classifier_consistency(classifier, images, classes):.3f}")
    return EXIT_OK
