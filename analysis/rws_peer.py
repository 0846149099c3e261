"""Our reweighted wake-sleep against Pyro's ``ReweightedWakeSleep`` at equal wall-clock, scored by IS-K.

    python analysis/rws_peer.py --minutes 10 [--batches 128 1] [--images 200] [--eval-particles 1000]

Each run trains the dense 784-512-512-10 untied DCIM (``fit --untie``'s start, seed 0) for ``--minutes`` of its
own wall-clock: ours with :func:`~pyro_dcim.objectives.reweighted_wake_sleep_loss` and a plain Adam loop, Pyro
with ``SVI`` + ``ReweightedWakeSleep`` (vectorised particles, validation off: its fastest working setting) on
the same DCIM (``benchmarks/rws_peer.py``), same K, same settings (wake-φ 1, nats per image, the forward class
term), same learning rate, same digits in the same order.  The runs take turns of ``--slice`` seconds, so load
on the shared machine hits them alike.  Each net is saved as a run folder (``python -m pyro_dcim.likelihood
RUN --method is`` scores it) and scored here by the IS-K protocol on the first ``--images`` test digits
(one Bernoulli draw per pixel, seed 0), K = ``--eval-particles`` from each net's own forward chain.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from _report import command_line, machine_note, table, write_markdown

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pyro  # noqa: E402
import torch  # noqa: E402
from rws_peer import batches, build_net, ours_step, pyro_step, training_digits  # noqa: E402

from pyro_dcim import DCIM  # noqa: E402
from pyro_dcim.data import load_dataset  # noqa: E402
from pyro_dcim.inference import importance_weighted_log_likelihood  # noqa: E402
from pyro_dcim.training.checkpoint import model_state, save_checkpoint  # noqa: E402

SECONDS_PER_IS_ROW = 2.5e-4   # one particle of one digit, dense net, one loaded thread (measured)


@dataclass
class Run:
    """One side at one batch size: its net, its step, its place in the data, its clock."""

    side: str
    batch: int
    lr: float
    net: DCIM
    step: Any
    order: Iterator[torch.Tensor]
    seconds: float = 0.0
    steps: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.side}-b{self.batch}"


def make_runs(x: torch.Tensor, args: argparse.Namespace) -> list[Run]:
    runs = []
    for b in args.batches:
        lr = args.lr if b > 1 else args.lr_batch1
        for side in ("ours", "pyro"):
            net = build_net(x, args.seed)   # the same start on both sides
            step = ours_step(net, args.particles, lr, generator=torch.Generator().manual_seed(args.seed)) \
                if side == "ours" else pyro_step(net, args.particles, lr, vectorize=True, name=f"pyro_b{b}")
            runs.append(Run(side, b, lr, net, step, batches(len(x), b, args.seed)))
    return runs


def train(runs: list[Run], x: torch.Tensor, y: torch.Tensor, budget: float, turn: float) -> None:
    """Round-robin turns of ``turn`` seconds until every run has had ``budget`` seconds."""
    while any(r.seconds < budget for r in runs):
        for r in runs:
            start = time.perf_counter()
            while r.seconds + (time.perf_counter() - start) < budget and time.perf_counter() - start < turn:
                idx = next(r.order)
                with pyro.validation_enabled(False):   # Pyro's checks cost 5-20 % a step; ours has none
                    r.step(x[idx], y[idx])
                r.steps += 1
            r.seconds += time.perf_counter() - start
        done = ", ".join(f"{r.name} {r.seconds / 60:.1f} min {r.steps} steps" for r in runs)
        print(f"  {done}", flush=True)


def save_run(r: Run, folder: Path, args: argparse.Namespace) -> Path:
    """A run folder ``load_model`` and ``python -m pyro_dcim.likelihood`` read."""
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "checkpoint.pt", {"model": model_state(r.net)})
    config = {"dataset": "mnist", "data_dir": str(Path(args.data_dir).resolve()), "arch": "dense", "untie": True,
              "objective": "rws" if r.side == "ours" else "pyro.infer.ReweightedWakeSleep", "particles": args.particles,
              "wake_phi_weight": 1.0, "batch_size": r.batch, "lr": r.lr, "seed": args.seed,
              "train_seconds": r.seconds, "train_steps": r.steps}
    (folder / "config.json").write_text(json.dumps({"config": config}, indent=1))
    return folder


def score(r: Run, x_test: torch.Tensor, y_test: torch.Tensor, prior: torch.Tensor, args: argparse.Namespace
          ) -> torch.Tensor:
    """IS-K on the first ``--images`` test digits; test accuracy of the forward mean field on all of them.
    Returns the per-digit ``-log p(x^0 | y)`` (for paired differences)."""
    n = args.images
    with torch.no_grad():
        r.scores["test_acc"] = float((r.net(x_test).argmax(1) == y_test).float().mean())
    iw = importance_weighted_log_likelihood(r.net, x_test[:n], y_test[:n], args.eval_particles, class_prior=prior,
                                            generator=torch.Generator().manual_seed(0), warn=False)
    cond, marg = -iw.conditional, -iw.marginal
    r.scores.update(nll_cond=float(cond.mean()), nll_cond_se=float(cond.std() / math.sqrt(n)),
                    nll_marg=float(marg.mean()), nll_marg_se=float(marg.std() / math.sqrt(n)),
                    khat_over_07=float((iw.conditional_khat > 0.7).float().mean()),
                    ess=float(iw.conditional_ess.median()))
    return cond


def report(runs: list[Run], paired: dict[int, torch.Tensor], args: argparse.Namespace) -> str:
    rows = []
    for r in runs:
        per_epoch = r.seconds / r.steps * math.floor(args.train_size / r.batch)
        s = r.scores
        epochs = r.steps * r.batch / args.train_size
        rows.append([r.side, r.batch, r.lr, f"{r.seconds / 60:.1f}", r.steps, f"{epochs:.2f}",
                     f"{per_epoch:.0f}", f"{s['nll_cond']:.1f} ± {s['nll_cond_se']:.1f}",
                     f"{s['nll_marg']:.1f} ± {s['nll_marg_se']:.1f}", f"{s['khat_over_07']:.2f}", f"{s['ess']:.1f}",
                     f"{s['test_acc']:.4f}"])
    head = ["side", "batch", "lr", "minutes", "steps", "epochs", "s/epoch", "IS-K −log p(x⁰ | y)", "IS-K −log p(x⁰)",
            "k̂ > 0.7", "median ESS", "test acc"]
    diffs = [f"batch {b}: {float(d.mean()):+.1f} ± {float(d.std() / math.sqrt(len(d))):.1f} nats"
             for b, d in paired.items()]
    return (table(head, rows) + "\n\nOurs − Pyro, −log p(x⁰ | y) per digit (paired, same digits; negative: ours "
            "better): " + "; ".join(diffs) + ".")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of each run")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1])
    p.add_argument("--particles", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate at batch > 1 (both sides)")
    p.add_argument("--lr-batch1", type=float, default=3e-4, help="Adam's learning rate at batch 1 (both sides)")
    p.add_argument("--slice", type=float, default=15.0, help="seconds of one turn of the round-robin")
    p.add_argument("--images", type=int, default=200, help="test digits scored")
    p.add_argument("--eval-particles", type=int, default=1000, help="K of the IS-K protocol")
    p.add_argument("--train-size", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "out" / "rws_peer")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_runs = 2 * len(args.batches)
    guess = n_runs * (args.minutes * 60 + args.images * args.eval_particles * SECONDS_PER_IS_ROW) + 30
    print(f"expected time: about {guess / 60:.0f} min ({n_runs} runs of {args.minutes:g} min, then IS-K with "
          f"K={args.eval_particles} on {args.images} digits each)", flush=True)
    torch.manual_seed(args.seed)   # Pyro's particles come from the global generator
    pyro.clear_param_store()
    x, y = training_digits(args.data_dir, args.train_size)
    runs = make_runs(x, args)
    train(runs, x, y, args.minutes * 60, args.slice)
    x_test, y_test = load_dataset("mnist", "test", args.data_dir, binarize_mode="sample", seed=0)
    _, y_train = load_dataset("mnist", "train", args.data_dir)
    prior = torch.bincount(y_train, minlength=10).double()   # p(y): the training class frequencies, as likelihood
    prior = prior / prior.sum()
    cond: dict[str, torch.Tensor] = {}
    for r in runs:
        save_run(r, args.out / "runs" / r.name, args)
        cond[r.name] = score(r, x_test, y_test, prior, args)
        print(f"  {r.name}: -log p(x0 | y) {r.scores['nll_cond']:.1f}, test acc {r.scores['test_acc']:.4f}", flush=True)
    paired = {b: cond[f"ours-b{b}"] - cond[f"pyro-b{b}"] for b in args.batches}
    body = report(runs, paired, args)
    intro = (f"Generated by {command_line()}. {machine_note(args.threads)}\n\n"
             f"Dense 784-512-512-10, untied, K = {args.particles} particles, wake-φ weight 1 on both sides (Pyro's "
             "`insomnia=1`), nats per image, the forward class term beside it (Pyro: a `pyro.factor` in the model), "
             f"Adam, the first {args.train_size} MNIST training digits binarised once (seed 0) in one seeded order. "
             "Pyro: `SVI(model, guide, pyro.optim.Adam, ReweightedWakeSleep(num_particles=K, "
             "vectorize_particles=True, max_plate_nesting=1))`, validation off, model = `net.reverse_model(y, x0)`, "
             "guide = the forward chain drawn ancestrally (`benchmarks/rws_peer.py`). Pyro's RWS sums a batch's "
             "log-weights into one weight per particle, so at batch 128 its update is not per-image RWS. "
             f"IS-K: the first {args.images} test digits (one Bernoulli draw per pixel, seed 0), K = "
             f"{args.eval_particles} from each net's own forward chain; ± is the standard error over digits; "
             "p(y) the training class frequencies; k̂ > 0.7: the fraction of digits whose weights are too heavy-tailed "
             "for K (the estimate is then a loose lower bound on log p, an upper bound on −log p). "
             "s/epoch: the run's own seconds per step × the steps of one epoch. Test accuracy: forward mean field, "
             "all 10,000 test digits.")
    write_markdown(args.out / "rws_peer.md", "Reweighted wake-sleep: ours against pyro.infer.ReweightedWakeSleep",
                   [intro, body])
    (args.out / "rws_peer.json").write_text(json.dumps(
        {"command": command_line(), "runs": [{"name": r.name, "batch": r.batch, "lr": r.lr, "seconds": r.seconds,
                                             "steps": r.steps, **r.scores} for r in runs],
         "paired_ours_minus_pyro": {str(b): float(d.mean()) for b, d in paired.items()}}, indent=1))


if __name__ == "__main__":
    main()
