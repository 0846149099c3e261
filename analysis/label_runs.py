"""Labels optional on full MNIST (issue 25): the runs behind ``analysis/results/semi_supervised.md``.

    python analysis/label_runs.py [--labels 100 ...] [--seeds 0 1 2] [--learned-prior] [--root runs/labels]
                                  [--dry-run]

For each label count and seed (the seed draws the labels, the weights and the data order): the generative
run with the other training digits unlabelled, and the same net trained discriminatively on the labelled
digits alone (the same batches, unlabelled rows left out); and one unsupervised run (``--labels 0``) per seed,
with ``--learned-prior`` also one with ``--class-prior learned``.
Dense 784-512-512-10, 10 epochs, Adam 3e-3 cosine, batch 128, dynamic binarisation, no augmentation.  Each
run is resumable (``run_queue.py``); evaluate them with ``analysis/semi_supervised.py`` (printed at the end).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from run_queue import run_queue

COMMON = ["--dataset", "mnist", "--data-dir", "../shared/data/mnist", "--arch", "dense", "--binarize", "dynamic",
          "--augment", "none", "--batch-size", "128", "--epochs", "10", "--lr", "3e-3", "--no-figures"]


def runs_for(labels: list[int], seeds: list[int], unsupervised: bool, learned_prior: bool = False
             ) -> dict[str, list[str]]:
    runs = {}
    for seed in seeds:
        for n in labels:
            runs[f"l{n}-s{seed}"] = ["--objective", "generative", "--labels", str(n), "--seed", str(seed)]
            runs[f"disc-l{n}-s{seed}"] = ["--objective", "discriminative", "--labels", str(n), "--seed", str(seed)]
        if unsupervised:
            runs[f"unsupervised-s{seed}"] = ["--objective", "generative", "--labels", "0", "--seed", str(seed)]
        if unsupervised and learned_prior:
            runs[f"unsupervised-prior-s{seed}"] = ["--objective", "generative", "--labels", "0", "--seed", str(seed),
                                                   "--class-prior", "learned"]
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", nargs="*", type=int, default=[100],
                   help="label counts (none: the unsupervised runs alone)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--no-unsupervised", dest="unsupervised", action="store_false")
    p.add_argument("--learned-prior", action="store_true",
                   help="also each unsupervised run with --class-prior learned (unsupervised-prior-sS)")
    p.add_argument("--root", type=Path, default=Path("runs/labels"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = p.parse_args()
    runs = runs_for(args.labels, args.seeds, args.unsupervised, args.learned_prior)
    rc = run_queue(args.root, runs, COMMON, args.threads, args.dry_run, minutes=(2, 15))
    if rc == 0:
        print("evaluate: python analysis/semi_supervised.py " + " ".join(str(args.root / n) for n in runs))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
