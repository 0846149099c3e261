"""``python -m pyro_dcim.diagnose RUN_DIR --images N [--chains K --samples S --out DIR]``

Loads a trained run, takes the first N test images of its dataset (binarised: the Gibbs kernel
samples the posterior of a binary image), samples the hidden posterior
``p(x^1..x^{n-1} | x^0, x^n = true class)`` with the Gibbs kernel, and prints the ArviZ
diagnostics (R-hat, bulk/tail ESS, MCSE; per image and the worst quantities) and, per hidden
layer, how far the mean-field marginals (eq. 14) are from the Gibbs posterior.  It writes
``summary.csv`` (every quantity), ``per_image.csv``, ``layers.csv`` and ``trace_rank.png``
(rank plots and running means of the first image's units with the worst R-hat) to ``--out``
(default ``RUN_DIR/diagnose``), which is checked before sampling starts.

Exit status: 0 done; 2 bad input (one line on stderr, nothing sampled); 130 / 143 stopped by
SIGINT / SIGTERM (one line; no file is left half-written).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..data import DataError, binarize, load_dataset
from ..inference import diagnostics, gibbs_posterior, mean_field_marginals
from ..inference.gibbs import INITS
from ..training.atomic import atomic_write
from ..training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_model
from ..training.config import ConfigError, resolve_device
from ..training.runs import CONFIG_NAME, RunDirError, read_config
from ..training.signals import Stopped, stop_on_signals
from .errors import EXIT_BAD_INPUT, EXIT_OK, OneLineParser, one_line, report_interrupt
from .output import OutputError, prepare_output_dir

__all__ = ["main", "build_parser", "layer_differences", "MIN_CHAINS", "MIN_SAMPLES"]


PROG = "python -m pyro_dcim.diagnose"
#: R-hat compares chains: one chain has none to compare with (ArviZ returns NaN)
MIN_CHAINS = 2
#: ArviZ's R-hat and ESS need at least 4 draws per chain (fewer: NaN and a shape warning)
MIN_SAMPLES = 4
OUT_FILES = ("summary.csv", "per_image.csv", "layers.csv", "trace_rank.png")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description="Gibbs sampling of a trained DCIM's hidden posterior, with ArviZ "
                                             "convergence diagnostics and the mean-field error per layer.")
    p.add_argument("run_dir", type=Path, help=f"a run folder holding {CHECKPOINT_NAME} (and config.json)")
    p.add_argument("--images", type=int, default=4, help="number of test images, the first N (default %(default)s)")
    p.add_argument("--chains", type=int, default=4, help=f"chains per image, run as one batch; at least {MIN_CHAINS}, "
                   "as R-hat compares chains (default %(default)s)")
    p.add_argument("--samples", type=int, default=500, help=f"draws per chain after warm-up; at least {MIN_SAMPLES} "
                   "(ArviZ's minimum), a few hundred for useful ESS and R-hat (default %(default)s)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up sweeps per chain (default %(default)s)")
    p.add_argument("--direction", choices=("forward", "reverse"), default="forward",
                   help="posterior of the forward chain (eq. 13) or of the reverse chain (eq. 17) "
                        "(default %(default)s)")
    p.add_argument("--init", choices=INITS, default="prior", help="chain initialisation (default %(default)s)")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="the split whose first N images are used (default %(default)s)")
    p.add_argument("--binarize", choices=("sample", "threshold"), default="sample",
                   help="how the images become binary: one Bernoulli draw per pixel, seeded by --seed, or x > 0.5 "
                        "(default %(default)s)")
    p.add_argument("--dataset", default=None, help="override the run's dataset (default: config.json's 'dataset', "
                   "else mnist-subset)")
    p.add_argument("--data-dir", default=None, help="override the run's data folder (default: config.json's "
                   "'data_dir')")
    p.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST with "
                   "torchvision into the data folder (needs internet)")
    p.add_argument("--seed", type=int, default=0, help="seeds the binarisation and the chains (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads while sampling (0: leave as is); a sweep is many small "
                        "operations, for which one thread is usually fastest on CPU (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="folder for summary.csv, per_image.csv, layers.csv and "
                   "trace_rank.png, made and checked before sampling (default RUN_DIR/diagnose)")
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


def _check_counts(args, parser) -> None:
    """The counts, before anything is loaded: each minimum with the reason for it."""
    if args.chains < MIN_CHAINS:
        _fail(parser, f"--chains must be at least {MIN_CHAINS}, got {args.chains}: R-hat compares chains, and one "
                      "chain has none to compare with")
    if args.samples < MIN_SAMPLES:
        _fail(parser, f"--samples must be at least {MIN_SAMPLES}, got {args.samples}: ArviZ's R-hat and ESS need "
                      f"{MIN_SAMPLES} draws per chain (a few hundred give useful ones)")
    for name, least in (("images", 1), ("warmup", 0), ("threads", 0)):
        if getattr(args, name) < least:
            _fail(parser, f"--{name} must be at least {least}, got {getattr(args, name)}")


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
    if net.num_layers < 2:
        _fail(parser, f"{args.run_dir}: the net {net.spec} has no hidden layers, so there is nothing to sample")
    name = args.dataset or config.get("dataset", "mnist-subset")
    try:
        images, labels = load_dataset(name, split=args.split, data_dir=args.data_dir or config.get("data_dir"),
                                      download=args.download)
    except (ValueError, OSError) as e:
        _fail(parser, f"cannot load dataset {name!r}: {e}")
    if args.images > len(images):
        _fail(parser, f"--images must be between 1 and {len(images)}, got {args.images}")
    try:
        x0 = binarize(images[:args.images], args.binarize, seed=args.seed)
    except DataError as e:
        _fail(parser, str(e))
    x0 = x0.to(device=net.input_bias.device, dtype=net.input_bias.dtype)
    return net, x0, labels[:args.images].to(net.input_bias.device)


def _write(out: Path, table, per_image, layers, idata) -> None:
    """The four files, each written whole or not at all (atomically: a signal mid-write leaves none half-done)."""
    import pandas as pd

    def csv(frame, **kwargs) -> bytes:
        buffer = io.StringIO()
        frame.to_csv(buffer, **kwargs)
        return buffer.getvalue().encode()

    for name, data in (("summary.csv", csv(table)), ("per_image.csv", csv(per_image)),
                       ("layers.csv", csv(pd.DataFrame(layers), index=False))):
        atomic_write(out / name, lambda f, data=data: f.write(data))
    diagnostics.plot_trace_rank(idata, out / "trace_rank.png")


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check_counts(args, parser)
    out = args.out if args.out is not None else args.run_dir / "diagnose"
    progress = sys.stderr.isatty()   # a bar only where someone watches it, as fit does
    stage = "while loading the run"
    try:
        with stop_on_signals():   # SIGTERM too: one line and 143, not a silent end
            net, x0, y = _load_run(args, parser)
            try:   # before the sampling, so that a bad --out costs nothing
                prepare_output_dir(out)
            except OutputError as e:
                _fail(parser, f"{e}; choose another --out")
            net.eval()
            torch.manual_seed(args.seed)
            print(f"{args.run_dir}: {net.spec} ({net.units} units), {args.images} image(s), {args.chains} chains x "
                  f"{args.samples} draws after {args.warmup} warm-up sweeps, {args.direction} posterior", flush=True)
            stage = "while sampling"
            est, idata = gibbs_posterior(net, x0, y, num_samples=args.samples, warmup_steps=args.warmup,
                                         num_chains=args.chains, direction=args.direction, init=args.init,
                                         progress=progress, num_threads=args.threads or None)
            stage = "while computing the diagnostics"
            seconds = est.extra["seconds"]
            per_image = diagnostics.per_image_report(idata, seconds)
            per_image.insert(0, "label", y.cpu().numpy())
            table = diagnostics.summary(idata)
            mf = mean_field_marginals(net, x0, y=y, direction=args.direction)
            layers = layer_differences(mf.hidden, est.hidden, est.stderr.hidden)
            _print(args, seconds, per_image, table, layers)
            stage = f"while writing {out}"
            _write(out, table, per_image, layers, idata)
    except Stopped as e:
        what = ("nothing was written" if not stage.startswith("while writing") else
                "no file is half-written (each is this run's or as it was before)")
        return report_interrupt(prog, stage, what, signum=e.signum, fresh_line=progress and stage == "while sampling")
    print(f"\nwrote {out}/{', '.join(OUT_FILES)}")
    return EXIT_OK


def _print(args, seconds: float, per_image, table, layers: list[dict]) -> None:
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
