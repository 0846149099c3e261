"""``python -m pyro_dcim.likelihood RUN_DIR``: how good is the generator? Its log-likelihood on the test set.

    python -m pyro_dcim.likelihood runs/my-run                                   # IS-5000, whole test set
    python -m pyro_dcim.likelihood runs/my-run --calibrate 200 --steps 1000 --chains 4   # + AIS on 200 digits
    python -m pyro_dcim.likelihood runs/my-run --method ais --images 100 --steps 1000 --chains 16

The test digits of the run's dataset are binarised once, one Bernoulli draw per pixel with a fixed
seed (the "dynamically binarised" MNIST test set of the literature, not Larochelle's static set).
``--method is`` (default) is the literature's protocol: the importance-weighted estimate with K
particles from the run's forward (recognition) chain, ``log (1/K) Σ_k p(x0, h_k | y) / q(h_k | x0)``,
for ``-log p(x0 | y)`` and ``-log p(x0)`` (the class summed out exactly), with Pareto k̂ per digit;
a stochastic upper bound on the nats.  ``--calibrate N`` runs AIS on N random digits of those and
BDMC on simulated digits, and reports IS's bias on them.  ``--method ais``: annealed importance
sampling on every digit.  Results are written per chunk of digits as they come; the same command
resumes after Ctrl-C, SIGTERM or kill -9.  Under torchrun the chunks are shared across ranks.
Exit status: 0 done, 2 bad input (one line on stderr), 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..data import DataError, load_dataset
from ..fingerprint import net_fingerprint
from ..inference import diagnostics
from ..inference.ais import SCHEDULES, STARTS, ais_log_likelihood, ais_log_marginal
from ..inference.bdmc import bdmc
from ..inference.importance_weighted import DEFAULT_PARTICLES, importance_weighted_log_likelihood
from ..inference.weights import MIN_SAMPLES_FOR_KHAT, UnreliableEstimateWarning
from ..training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_model
from ..training.config import ConfigError, resolve_device
from ..training.proposal import PROPOSAL_NAME, fit_proposal, load_proposal
from ..training.runs import RunDirError, read_config
from ..training.signals import Stopped, stop_on_signals
from .errors import EXIT_OK, OneLineParser, report, report_interrupt
from .likelihood_report import calibration_digits, describe, summarise
from .output import prepare_output_dir
from .results import ResultFolder

__all__ = ["main", "build_parser"]

PROG = "python -m pyro_dcim.likelihood"
METHODS = ("is", "ais")
PROPOSALS = ("forward", "fitted")
#: Digits per saved chunk of the calibration AIS.
CALIBRATION_CHUNK = 10


def _images(text: str) -> int:
    if text == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of digits or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'all'), got {n}")
    return n


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[2],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=f"a run folder holding {CHECKPOINT_NAME}")
    p.add_argument("--method", choices=METHODS, default="is",
                   help="is: importance-weighted estimate with K particles (the literature's protocol); ais: AIS")
    p.add_argument("--images", type=_images, default=None,
                   help="the first N test digits, or 'all' (default: all for is, 100 for ais)")
    p.add_argument("--particles", type=int, default=DEFAULT_PARTICLES, help="K, importance particles per digit (is)")
    p.add_argument("--proposal", choices=PROPOSALS, default="forward",
                   help="is: draw h from the run's forward chain, or from a copy of it fitted to the generator's "
                        "posterior by wake-phi on the training digits (saved in --out/proposal.pt; resumable)")
    p.add_argument("--proposal-epochs", type=int, default=10, help="fitted proposal: epochs over the training digits")
    p.add_argument("--proposal-particles", type=int, default=10, help="fitted proposal: wake-phi particles")
    p.add_argument("--proposal-sleep", type=float, default=0.0, help="fitted proposal: weight of sleep-phi")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="is: also AIS (--steps x --chains) on N random digits of those and BDMC on "
                        "--bdmc-images simulated digits; reports IS's bias on them")
    p.add_argument("--steps", type=int, default=1000, help="AIS temperatures, one Gibbs sweep each")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per digit (k̂ needs >= 21)")
    p.add_argument("--start", choices=STARTS, default="forward",
                   help="AIS from the forward chain q(h | x0) or from the reverse prior p(h | y)")
    p.add_argument("--schedule", choices=SCHEDULES, default="sigmoid", help="AIS temperature schedule")
    p.add_argument("--no-unconditional", dest="unconditional", action="store_false",
                   help="ais: skip -log p(x0), which costs one AIS run per class (is: always computed, free)")
    p.add_argument("--class-prior", choices=("model", "train", "uniform"), default=None,
                   help="p(y) of the unconditional likelihood: the one the net learned (fit --class-prior learned), "
                   "the training class frequencies, or uniform (default: model for a net that learned it, uniform "
                   "for a run trained with --labels N or 0, else train)")
    p.add_argument("--bdmc", action="store_true",
                   help="ais: also the BDMC gap on simulated digits (is: --calibrate runs it)")
    p.add_argument("--bdmc-images", type=int, default=10, help="simulated digits for BDMC")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split's digits to score")
    p.add_argument("--chunk", type=int, default=None,
                   help="digits per saved chunk, the unit of resuming (default 20 for is, 10 for ais)")
    p.add_argument("--seed", type=int, default=0, help="seeds the binarisation and every draw")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = PyTorch's default)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="a progress bar")
    p.add_argument("--out", type=Path, help="results folder (default RUN_DIR/likelihood-METHOD)")
    return p


def _check(args) -> None:
    for name in ("particles", "steps", "chains", "bdmc_images", "proposal_epochs", "proposal_particles"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.particles < 2:
        raise ConfigError(f"--particles must be at least 2, got {args.particles}")
    for name in ("calibrate", "threads"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be 0 or more, got {getattr(args, name)}")
    if args.chunk is not None and args.chunk < 1:
        raise ConfigError(f"--chunk must be at least 1, got {args.chunk}")
    if args.calibrate and args.method != "is":
        raise ConfigError("--calibrate measures importance sampling against AIS: use it with --method is")
    if not args.run_dir.is_dir() or not (args.run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"{args.run_dir} holds no run (no {CHECKPOINT_NAME}); train one with python -m pyro_dcim.fit")


def _data(args, config: dict, net) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole binarised split (scored: its first ``--images``; calibrated: random digits of all of it)."""
    name, data_dir = config.get("dataset", "mnist-subset"), config.get("data_dir")
    x, y = load_dataset(name, args.split, data_dir, binarize_mode="sample", seed=args.seed)
    if args.images > len(x):
        raise ConfigError(f"--images {args.images} is more than the {len(x)} digits of the {name} {args.split} set")
    if args.class_prior == "uniform":
        prior = torch.full((net.num_classes,), 1.0 / net.num_classes, dtype=torch.float64)
    elif args.class_prior == "model":
        prior = net.class_prior_probs().cpu().double()
    else:
        _, train_y = load_dataset(name, "train", data_dir)
        prior = torch.bincount(train_y, minlength=net.num_classes).double()
        prior = prior / prior.sum()
    dev = net.input_bias.device
    return x.to(net.input_bias), y.to(dev), prior


def settings_of(args, net) -> dict[str, dict]:
    """What each kind of result in ``--out`` depends on: a resumed run must share it."""
    common = {"run": str(args.run_dir), "net": net_fingerprint(net), "split": args.split, "seed": args.seed,
              "class_prior": args.class_prior, "binarisation": "one Bernoulli draw per pixel (seed)"}
    ais = {"steps": args.steps, "chains": args.chains, "start": args.start, "schedule": args.schedule,
           "chunk": args.chunk if args.method == "ais" else CALIBRATION_CHUNK}
    kinds = {"common": common}
    if args.method == "is":
        main = kinds[result_kind(args)] = {"particles": args.particles, "proposal": args.proposal}
        if args.proposal == "fitted":
            main.update(proposal_epochs=args.proposal_epochs, proposal_particles=args.proposal_particles,
                        proposal_sleep=args.proposal_sleep)
    else:
        kinds["ais"] = dict(ais, unconditional=args.unconditional)
    if args.calibrate:
        kinds["calibration"] = dict(ais, calibrate=args.calibrate)
    if args.calibrate or args.bdmc:
        kinds["bdmc"] = dict(ais, bdmc_images=args.bdmc_images)
    return kinds


def _proposal(args, net, config: dict, folder: ResultFolder):
    """The fitted proposal, trained first if ``--out`` does not hold a finished one (rank 0 trains)."""
    path = folder.out / PROPOSAL_NAME
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        x, y = load_dataset(config.get("dataset", "mnist-subset"), "train", config.get("data_dir"))
        done = path.is_file() and load_checkpoint(path).get("epoch") == args.proposal_epochs
        if not done:
            print(f"fitting the proposal: {args.proposal_epochs} epochs of wake-phi over {len(x)} training digits "
                  f"(K = {args.proposal_particles}), saved each epoch in {path}", flush=True)
        fit_proposal(net, x.to(net.input_bias), y.to(net.input_bias.device), epochs=args.proposal_epochs,
                     particles=args.proposal_particles, sleep_weight=args.proposal_sleep, seed=args.seed,
                     checkpoint=path, log=lambda line: print(line, flush=True))
    _barrier()
    return load_proposal(path, net)


def _is_rows(args, net, proposal, x0, y, prior, images: list[int]) -> list[dict]:
    # one random stream per digit: its numbers do not depend on chunking, ranks or resumes
    gens = [torch.Generator(device=x0.device).manual_seed(args.seed * 1_000_003 + i) for i in images]
    r = importance_weighted_log_likelihood(net, x0[images], y[images], args.particles, class_prior=prior,
                                           proposal=proposal, generator=gens, warn=False)
    return [{"image": i, "label": int(y[i]),
             "nll_conditional": -float(r.conditional[j]), "stderr_conditional": float(r.conditional_stderr[j]),
             "ess_conditional": float(r.conditional_ess[j]), "khat_conditional": float(r.conditional_khat[j]),
             "nll": -float(r.marginal[j]), "stderr": float(r.marginal_stderr[j]),
             "ess": float(r.marginal_ess[j]), "khat": float(r.marginal_khat[j])} for j, i in enumerate(images)]


def _ais_rows(args, net, x0, y, prior, images: list[int], folder: ResultFolder, kind: str,
              unconditional: bool) -> list[dict]:
    torch.manual_seed(args.seed * 1_000_003 + images[0])   # a chunk's draws: fixed chunks (in the settings)
    kw = dict(start=args.start, schedule=args.schedule, progress=False, checkpoint_every=50)
    xs, ys = x0[images], y[images]
    tag = f".{kind}-{images[0]:06d}"
    cond = ais_log_likelihood(net, xs, ys, args.steps, args.chains, checkpoint=folder.out / f"{tag}.ais", **kw)
    marg = ais_log_marginal(net, xs, args.steps, args.chains, class_prior=prior,
                            checkpoint=folder.out / f"{tag}.ais-marginal", **kw) if unconditional else None
    rows = []
    for j, i in enumerate(images):
        row = {"image": i, "label": int(y[i]), "nll_conditional": -float(cond.estimate[j]),
               "stderr_conditional": float(cond.stderr[j]), "khat_conditional": float(cond.khat[j])}
        if marg is not None:
            row.update(nll=-float(marg.estimate[j]), stderr=float(marg.stderr[j]))
        rows.append(row)
    return rows


def _work(args, folder: ResultFolder, kind: str, chunks: list[list[int]],
          compute: Callable[[list[int]], list[dict]], what: str) -> None:
    """Compute this rank's unfinished chunks of ``kind``, saving each; print an estimate after the first."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    done = folder.done(kind)
    if done and rank == 0 and len(done) < sum(len(c) for c in chunks):
        print(f"resuming {what}: {len(done)} digits already in {folder.out}", flush=True)
    # a chunk's rank is fixed by its place, not by what another rank has finished meanwhile
    todo = [c for j, c in enumerate(chunks) if j % world == rank and not all(i in done for i in c)]
    if not todo:
        return
    digits = sum(len(c) for c in todo)
    bar = None
    if args.progress and rank == 0 and len(todo) > 1:
        from tqdm.auto import tqdm
        bar = tqdm(total=digits, desc=what, unit="digit", leave=False)
    try:
        began = time.perf_counter()
        for n, images in enumerate(todo):
            t = time.perf_counter()
            rows = compute(images)
            for row in rows:   # compute seconds per digit: the summary adds them up over ranks and resumes
                row["seconds"] = (time.perf_counter() - t) / len(rows)
            folder.save(kind, rows)
            if bar is not None:
                bar.update(len(images))
            if n == 0 and rank == 0 and len(todo) > 1:
                per = (time.perf_counter() - began) / len(images)
                msg = f"{what}: ~ {_minutes(per * digits)} for {digits} digits ({per:.2f} s per digit)"
                (bar.write if bar is not None else print)(msg)
    finally:
        if bar is not None:
            bar.close()


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def _calibration_digits(args, n: int) -> list[int]:
    g = torch.Generator().manual_seed(args.seed + 7919)
    return sorted(torch.randperm(n, generator=g)[:args.calibrate].tolist())


def result_kind(args) -> str:
    """The name of the main results in ``--out``: one folder holds IS with either proposal, AIS, calibration."""
    return f"is-{args.proposal}" if args.method == "is" else "ais"


def run(args, folder: ResultFolder, net, x0, y, prior, config: dict) -> dict:
    n, kind = args.images, result_kind(args)

    def chunked(images: list[int], size: int) -> list[list[int]]:
        return [images[i:i + size] for i in range(0, len(images), size)]

    chunks = chunked(list(range(n)), args.chunk)
    if args.method == "is":
        proposal = _proposal(args, net, config, folder) if args.proposal == "fitted" else None

        def score(images):
            return _is_rows(args, net, proposal, x0, y, prior, images)

        _work(args, folder, kind, chunks, score, f"IS-{args.particles}")
    else:
        _work(args, folder, kind, chunks,
              lambda images: _ais_rows(args, net, x0, y, prior, images, folder, kind, args.unconditional),
              f"AIS {args.steps} x {args.chains}")
    if args.calibrate:
        picked = calibration_digits(args.seed, len(x0), args.calibrate)
        _work(args, folder, kind, chunked(picked, args.chunk), score, f"IS-{args.particles} on the calibration digits")
        _work(args, folder, "calibration", chunked(picked, CALIBRATION_CHUNK),
              lambda images: _ais_rows(args, net, x0, y, prior, images, folder, "calibration", False),
              f"calibration AIS {args.steps} x {args.chains}")
    if (args.method == "ais" and args.bdmc or args.calibrate) and int(os.environ.get("RANK", 0)) == 0 \
            and not (folder.out / "bdmc.json").is_file():
        torch.manual_seed(args.seed)
        b = bdmc(net, args.bdmc_images, args.steps, args.chains, seed=args.seed, start=args.start,
                 schedule=args.schedule, checkpoint=folder.out / ".bdmc")
        folder.write_json("bdmc.json", {"images": args.bdmc_images, "nll_lower": -float(b.upper.mean()),
                                        "nll_upper": -float(b.lower.mean()), "gap_mean": float(b.gap.mean()),
                                        "gap_max": float(b.gap.max()), "gap": [float(v) for v in b.gap],
                                        "seconds": b.seconds})
    _barrier()
    return summarise(args, folder, kind)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _warn_unchecked(args) -> None:
    """Settings whose Monte Carlo error bar cannot be checked say so before the work."""
    if (args.method == "ais" or args.calibrate) and args.chains < MIN_SAMPLES_FOR_KHAT:
        check = "the BDMC gap (--bdmc)" if args.method == "ais" else "the BDMC gap of --calibrate"
        print(f"note: with {args.chains} AIS chains Pareto k̂ cannot be computed (needs >= {MIN_SAMPLES_FOR_KHAT}); "
              f"the AIS error bars are unchecked and {check} is the only check", file=sys.stderr)
    if args.method == "is" and args.particles < MIN_SAMPLES_FOR_KHAT:
        print(f"note: with {args.particles} particles Pareto k̂ cannot be computed (needs >= "
              f"{MIN_SAMPLES_FOR_KHAT}); the error bars are unchecked", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.images is None:
        args.images = 0 if args.method == "is" else 100
    if args.chunk is None:
        args.chunk = 20 if args.method == "is" else 10
    threads = torch.get_num_threads()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    folder = None
    try:
        with stop_on_signals():
            _check(args)
            if args.threads:
                torch.set_num_threads(args.threads)
            out = args.out or args.run_dir / f"likelihood-{args.method}"
            prepare_output_dir(out, what="results folder")      # before loading anything heavy
            if world > 1:
                import torch.distributed as dist

                if not dist.is_initialized():
                    dist.init_process_group("gloo")
            net = load_model(args.run_dir, map_location=resolve_device(args.device)).eval()
            config = read_config(args.run_dir)
            if args.class_prior == "model" and net.class_prior != "learned":
                raise ConfigError(f"{args.run_dir} did not learn p(y) (fit --class-prior learned); its own p(y) is "
                                  "uniform: pass --class-prior uniform, or train")
            if config.get("labels") == 0:  # fit --labels 0: the class layer is a mixture, not the digit classes
                if args.class_prior == "train":
                    raise ConfigError(f"{args.run_dir} is unsupervised (--labels 0): its components are not the "
                                      "classes, so p(y) is its own; leave out --class-prior train")
            # the p(y) the run trained with: learned, or uniform where labels were dropped (--labels N or 0)
            default = ("model" if net.class_prior == "learned" else
                       "uniform" if config.get("labels") is not None else "train")
            args.class_prior = args.class_prior or default
            args.unsupervised = config.get("labels") == 0
            if not args.images:
                args.images = len(load_dataset(config.get("dataset", "mnist-subset"), args.split,
                                               config.get("data_dir"))[1])
            x0, y, prior = _data(args, config, net)
            args.split_size = len(x0)
            if args.calibrate > len(x0):
                raise ConfigError(f"--calibrate {args.calibrate} is more than the {len(x0)} digits scored")
            kinds = settings_of(args, net)
            folder = ResultFolder(out, kinds.pop("common"))
            for kind, settings in kinds.items():
                folder.check(kind, settings)
            if rank == 0:
                _warn_unchecked(args)
            diagnostics.load_arviz()     # its import is seconds: not in the first chunk's timing
            import warnings

            with warnings.catch_warnings():    # k̂ is reported per digit and summarised once
                warnings.simplefilter("ignore", UnreliableEstimateWarning)
                summary = run(args, folder, net, x0, y, prior, config)
    except Stopped as e:
        saved = len(folder.done(result_kind(args))) if folder else 0
        what = (f"{saved} of {args.images} digits are saved in {folder.out}; the same command resumes"
                if folder else "nothing was saved")
        return report_interrupt(prog, "", what, signum=e.signum, fresh_line=True)
    except (CheckpointError, ConfigError, RunDirError, DataError, ValueError) as e:
        return report(prog, e)
    finally:
        torch.set_num_threads(threads)
    if rank == 0:
        print(describe(summary))
        print(f"saved {folder.out}/{summary['files']['per_image']} and {summary['files']['summary']}")
    _leave_process_group()
    return EXIT_OK


def _leave_process_group() -> None:
    """Wait for every rank, then tear the group down: a gloo group left to the interpreter's exit
    can abort a rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


