"""``python -m pyro_dcim.diagnose RUN_DIR --images N [--chains K --samples S --out DIR]``

Loads a trained run, takes the first N test images of its dataset, samples the hidden
posterior ``p(x^1..x^{n-1} | x^0, x^n = true class)`` with the Gibbs kernel, and prints
the ArviZ diagnostics (R-hat, bulk/tail ESS, MCSE; per image and the worst quantities)
and, per hidden layer, how far the mean-field marginals (eq. 14) are from the Gibbs
posterior.  ``--out`` writes ``summary.csv`` (every quantity), ``per_image.csv``,
``layers.csv`` and ``trace_rank.png`` (rank plots and running means of the first image's
units with the worst R-hat).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..data import load_dataset
from ..inference import diagnostics, gibbs_posterior, mean_field_marginals
from ..inference.gibbs import INITS
from ..training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_model
from ..training.config import ConfigError, resolve_device
from ..training.runs import CONFIG_NAME, RunDirError, read_config
from .errors import EXIT_BAD_INPUT, EXIT_OK, OneLineParser, one_line

__all__ = ["main", "build_parser", "layer_differences"]


PROG = "python -m pyro_dcim.diagnose"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog,
                                description="Gibbs sampling of a trained DCIM's hidden posterior, with ArviZ "
                                            "convergence diagnostics and the mean-field error per layer.")
    p.add_argument("run_dir", type=Path, help=f"a run folder holding {CHECKPOINT_NAME} (and config.json)")
    p.add_argument("--images", type=int, default=4, help="number of test images (the first N)")
    p.add_argument("--chains", type=int, default=4, help="chains per image (run as one batch)")
    p.add_argument("--samples", type=int, default=500, help="draws per chain after warm-up")
    p.add_argument("--warmup", type=int, default=200, help="warm-up sweeps per chain")
    p.add_argument("--direction", choices=("forward", "reverse"), default="forward",
                   help="posterior of the forward chain (eq. 13) or of the reverse chain (eq. 17)")
    p.add_argument("--init", choices=INITS, default="prior", help="chain initialisation")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--dataset", default=None, help="override the run's dataset (config.json 'dataset')")
    p.add_argument("--data-dir", default=None, help="override the run's data folder (config.json 'data_dir')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads while sampling (0: leave as is); a sweep is many small "
                        "operations, for which one thread is usually fastest on CPU")
    p.add_argument("--out", type=Path, default=None, help="folder for summary.csv, per_image.csv, trace_rank.png")
    return p


def layer_differences(mean_field: list[torch.Tensor], gibbs: list[torch.Tensor],
                      stderr: list[torch.Tensor]) -> list[dict]:
    """Per hidden layer: mean and max ``|mean-field − Gibbs|`` and the mean Gibbs MCSE."""
    rows = []
    for k, (m, g, s) in enumerate(zip(mean_field, gibbs, stderr), start=1):
        d = (m - g).abs()
        rows.append({"layer": f"x{k}", "units": int(m[0].numel()), "mean_abs_diff": float(d.mean()),
                     "max_abs_diff": float(d.max()), "mean_mcse": float(s.mean())})
    return rows


def _fail(parser: argparse.ArgumentParser, message: str) -> None:
    parser.exit(EXIT_BAD_INPUT, f"{parser.prog}: error: {one_line(message)}\n")


def _load_run(args, parser) -> tuple:
    if not args.run_dir.is_dir():
        _fail(parser, f"run folder {args.run_dir} does not exist")
    try:
        device = resolve_device(args.device)
        net = load_model(args.run_dir, map_location=device)
        # a run's config.json nests the settings under "config"; read_config unwraps them
        config = read_config(args.run_dir) if (args.run_dir / CONFIG_NAME).is_file() else {}
    except (ConfigError, CheckpointError, RunDirError) as e:
        _fail(parser, str(e))
    name = args.dataset or config.get("dataset", "mnist-subset")
    try:
        images, labels = load_dataset(name, split=args.split, data_dir=args.data_dir or config.get("data_dir"))
    except (ValueError, OSError) as e:
        _fail(parser, f"cannot load dataset {name!r}: {e}")
    if args.images < 1 or args.images > len(images):
        _fail(parser, f"--images must be between 1 and {len(images)}, got {args.images}")
    x0 = images[:args.images].to(device=net.input_bias.device, dtype=net.input_bias.dtype)
    return net, x0, labels[:args.images].to(net.input_bias.device)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    net, x0, y = _load_run(args, parser)
    net.eval()
    torch.manual_seed(args.seed)
    print(f"{args.run_dir}: {net.spec} ({net.units} units), {args.images} image(s), {args.chains} chains x "
          f"{args.samples} draws after {args.warmup} warm-up sweeps, {args.direction} posterior")
    est, idata = gibbs_posterior(net, x0, y, num_samples=args.samples, warmup_steps=args.warmup,
                                 num_chains=args.chains, direction=args.direction, init=args.init, progress=True,
                                 num_threads=args.threads or None)
    seconds = est.extra["seconds"]
    per_image = diagnostics.per_image_report(idata, seconds)
    per_image.insert(0, "label", y.cpu().numpy())
    table = diagnostics.summary(idata)
    mf = mean_field_marginals(net, x0, y=y, direction=args.direction)
    layers = layer_differences(mf.hidden, est.hidden, est.stderr.hidden)

    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(f"\nsampling: {seconds:.2f} s ({seconds / (args.samples + args.warmup):.4f} s per sweep)")
        print("\nper image (over its hidden units):")
        print(per_image.to_string(float_format=lambda v: f"{v:.4g}"))
        print("\nworst quantities by R-hat:")
        worst = table.sort_values("r_hat", ascending=False, na_position="last").head(10)
        print(worst.to_string(float_format=lambda v: f"{v:.4g}"))
        which = "p(x^k | x^0)" if args.direction == "forward" else "p(x^k | y)"
        print(f"\nmean-field {which} vs Gibbs posterior p(x^k | x^0, y), per layer:")
        print(pd.DataFrame(layers).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "summary.csv")
        per_image.to_csv(args.out / "per_image.csv")
        pd.DataFrame(layers).to_csv(args.out / "layers.csv", index=False)
        diagnostics.plot_trace_rank(idata, args.out / "trace_rank.png")
        print(f"\nwrote {args.out}/summary.csv, per_image.csv, layers.csv, trace_rank.png")
    return EXIT_OK
