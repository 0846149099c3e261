"""``python -m pyro_dcim.likelihood RUN_DIR``: how good is the generator? Its log-likelihood by AIS.

    python -m pyro_dcim.likelihood runs/my-run --images 100 --steps 1000 --chains 16 [--bdmc] [--out DIR]

Takes the first N test digits of the run's dataset, binarised stochastically (one Bernoulli
draw per pixel, fixed by --seed), and estimates by annealed importance sampling
(:func:`pyro_dcim.inference.ais_log_likelihood`) the class-conditional -log p(x^0 | y) of the
reverse model at the true class and the unconditional -log p(x^0) = -logsumexp_y [log p(x^0 | y)
+ log p(y)], p(y) the training class frequencies.  Prints means over images ± their standard
error, the Monte Carlo error, the Pareto k̂ summary and seconds; --bdmc adds the BDMC gap at the
same setting on digits simulated from the model.  Writes per_image.csv and summary.json to
--out (default RUN_DIR/likelihood).  Under torchrun the images are split across ranks and
rank 0 gathers and writes.  Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..data import DataError, load_dataset
from ..inference.ais import SCHEDULES, STARTS, ais_log_likelihood, ais_log_marginal
from ..inference.bdmc import bdmc
from ..training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_model
from ..training.config import ConfigError, resolve_device
from ..training.runs import RunDirError, read_config
from .errors import EXIT_OK, OneLineParser, report

__all__ = ["main", "build_parser"]


PROG = "python -m pyro_dcim.likelihood"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=f"a run folder holding {CHECKPOINT_NAME}")
    p.add_argument("--images", type=int, default=100, help="the first N test digits (default 100)")
    p.add_argument("--steps", type=int, default=1000, help="AIS temperatures, one Gibbs sweep each (default 1000)")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per image (default 16)")
    p.add_argument("--start", choices=STARTS, default="forward",
                   help="AIS from the forward chain q(h | x0) or from the reverse prior p(h | y) (default forward)")
    p.add_argument("--schedule", choices=SCHEDULES, default="sigmoid", help="temperature schedule (default sigmoid)")
    p.add_argument("--no-unconditional", dest="unconditional", action="store_false",
                   help="skip -log p(x0), which costs one AIS run per class")
    p.add_argument("--class-prior", choices=("train", "uniform"), default="train",
                   help="p(y) of the unconditional likelihood: training class frequencies or uniform (default train)")
    p.add_argument("--bdmc", action="store_true", help="also the BDMC gap on simulated digits at the same setting")
    p.add_argument("--bdmc-images", type=int, default=10, help="simulated digits for --bdmc (default 10)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--seed", type=int, default=0, help="seeds the binarisation and the chains (default 0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = PyTorch's default)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="a progress bar")
    p.add_argument("--out", type=Path, help="folder for per_image.csv and summary.json (default RUN_DIR/likelihood)")
    return p


def _check(args) -> None:
    for name in ("images", "steps", "chains", "bdmc_images"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.run_dir.is_dir() or not (args.run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"{args.run_dir} holds no run (no {CHECKPOINT_NAME}); train one with python -m pyro_dcim.fit")


def _data(args, config: dict, net) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    name, data_dir = config.get("dataset", "mnist-subset"), config.get("data_dir")
    x, y = load_dataset(name, args.split, data_dir, binarize_mode="sample", seed=args.seed)
    if args.images > len(x):
        raise ConfigError(f"--images {args.images} is more than the {len(x)} digits of the {name} {args.split} set")
    if args.class_prior == "uniform":
        prior = torch.full((net.num_classes,), 1.0 / net.num_classes, dtype=torch.float64)
    else:
        _, train_y = load_dataset(name, "train", data_dir)
        prior = torch.bincount(train_y, minlength=net.num_classes).double()
        prior = prior / prior.sum()
    return x[:args.images].to(net.input_bias), y[:args.images].to(net.input_bias.device), prior


def _gather(rows: list[dict]) -> list[dict]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return rows
    everything: list = [None] * dist.get_world_size()
    dist.all_gather_object(everything, rows)
    return sorted((r for part in everything for r in part), key=lambda r: r["image"])


def _mean_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")


def run(args) -> dict:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
    device = resolve_device(args.device)
    net = load_model(args.run_dir, map_location=device).eval()
    config = read_config(args.run_dir).get("config", {})
    x0, y, prior = _data(args, config, net)
    mine = torch.arange(rank, len(x0), world)                  # this rank's images, by stride
    torch.manual_seed(args.seed + rank)
    kw = dict(start=args.start, schedule=args.schedule, progress=args.progress and rank == 0)
    began = time.perf_counter()
    cond = ais_log_likelihood(net, x0[mine], y[mine], args.steps, args.chains, **kw)
    marg = ais_log_marginal(net, x0[mine], args.steps, args.chains, class_prior=prior, **kw) \
        if args.unconditional else None
    rows = []
    for j, i in enumerate(mine.tolist()):
        row = {"image": i, "label": int(y[i]), "nll_conditional": -float(cond.estimate[j]),
               "stderr_conditional": float(cond.stderr[j]), "khat_conditional": float(cond.khat[j]),
               "reliable_conditional": bool(cond.reliable[j])}
        if marg is not None:
            row.update(nll=-float(marg.estimate[j]), stderr=float(marg.stderr[j]), reliable=bool(marg.reliable[j]))
        rows.append(row)
    rows = _gather(rows)
    seconds = time.perf_counter() - began
    summary = {"run": str(args.run_dir), "images": len(rows), "steps": args.steps, "chains": args.chains,
               "start": args.start, "schedule": args.schedule, "binarisation": f"sample (seed {args.seed})",
               "class_prior": args.class_prior, "world_size": world, "seconds": seconds}
    for key in ("conditional", "") if args.unconditional else ("conditional",):
        suffix = f"_{key}" if key else ""
        mean, se = _mean_se([r[f"nll{suffix}"] for r in rows])
        mc = math.sqrt(sum(r[f"stderr{suffix}"] ** 2 for r in rows)) / len(rows)
        summary[f"nll{suffix or '_unconditional'}"] = {"mean": mean, "se_images": se, "se_mc": mc}
    khats = [r["khat_conditional"] for r in rows if not math.isnan(r["khat_conditional"])]
    summary["khat"] = {"computed": len(khats), "max": max(khats) if khats else None,
                       "flagged": sum(not r["reliable_conditional"] for r in rows)}
    if args.bdmc:
        torch.manual_seed(args.seed)
        b = bdmc(net, args.bdmc_images, args.steps, args.chains, seed=args.seed, **kw)
        summary["bdmc"] = {"images": args.bdmc_images, "lower": float(b.lower.mean()), "upper": float(b.upper.mean()),
                           "gap_mean": float(b.gap.mean()), "gap_max": float(b.gap.max()), "seconds": b.seconds}
    summary["rows"] = rows
    return summary


def describe(summary: dict) -> str:
    c = summary["nll_conditional"]
    lines = [f"{summary['run']}: {summary['images']} binarised test digits, AIS {summary['steps']} temperatures x "
             f"{summary['chains']} chains from the {summary['start']} chain ({summary['schedule']} schedule)",
             f"  -log p(x0 | y) = {c['mean']:.2f} ± {c['se_images']:.2f} nats (± over images; Monte Carlo ± "
             f"{c['se_mc']:.2f})"]
    if "nll_unconditional" in summary:
        u = summary["nll_unconditional"]
        lines.append(f"  -log p(x0)     = {u['mean']:.2f} ± {u['se_images']:.2f} nats (Monte Carlo ± {u['se_mc']:.2f}; "
                     f"p(y) {summary['class_prior']})")
    k = summary["khat"]
    if k["computed"]:
        lines.append(f"  Pareto k̂: max {k['max']:.2f}; {k['flagged']} of {summary['images']} images above 0.7")
    else:
        lines.append(f"  Pareto k̂: not computable with {summary['chains']} chains (needs >= 21); BDMC is the check")
    if "bdmc" in summary:
        b = summary["bdmc"]
        lines.append(f"  BDMC on {b['images']} simulated digits: -log p(x0 | y) between {-b['upper']:.2f} and "
                     f"{-b['lower']:.2f} on average, gap {b['gap_mean']:.2f} nats (max {b['gap_max']:.2f}), "
                     f"{b['seconds']:.0f} s")
    lines.append(f"  {summary['seconds']:.0f} s")
    return "\n".join(lines)


def write(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = summary["rows"]
    with open(out / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2) + "\n")


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    try:
        _check(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        summary = run(args)
    except (CheckpointError, ConfigError, RunDirError, DataError, ValueError) as e:
        return report(prog, e)
    finally:
        torch.set_num_threads(threads)
    if int(os.environ.get("RANK", 0)) == 0:
        print(describe(summary))
        out = args.out or args.run_dir / "likelihood"
        write(summary, out)
        print(f"wrote {out}/per_image.csv, summary.json")
    _leave_process_group()
    return EXIT_OK


def _leave_process_group() -> None:
    """Wait for every rank, then tear the group down: a gloo group left to the interpreter's exit
    can abort a rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
