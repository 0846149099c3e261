"""One set of weights: the tied network's frontier between classifying and generating (issue 24 §3).

    python analysis/tied_frontier.py [--only NAME ...] [--root runs/tied] [--dry-run]

Trains, one after another, the tied dense 784-512-512-10 runs below on full MNIST (10 epochs each,
the settings of the tied rows of ``generator_comparison.md``: Adam 3e-3 cosine, batch 128, dynamic
binarisation, no augmentation, seed 0), each into ``ROOT/NAME``.  A finished run (``summary.json``) is
skipped and a stopped one resumed, so the same command continues after Ctrl-C or ``kill -9``.  Then
evaluate them beside the earlier tied rows with ``analysis/generator_comparison.py --runs ...`` (the
command it prints at the end).  Each run takes 5-15 min on one core of this machine (printed before).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from run_queue import run_queue

#: common settings: the tied rows of generator_comparison.md
COMMON = ["--dataset", "mnist", "--data-dir", "../shared/data/mnist", "--arch", "dense", "--binarize", "dynamic",
          "--augment", "none", "--batch-size", "128", "--epochs", "10", "--lr", "3e-3", "--seed", "0",
          "--no-figures", "--no-untie"]

#: name -> the settings that make the point (each one method of issue 24 §3)
RUNS = {
    # a discriminative warm start, then the generative weight ramped up
    "rws-warm3-ramp3": ["--objective", "rws", "--warm-start-epochs", "3", "--ramp-epochs", "3"],
    "generative-warm3-ramp3": ["--objective", "generative", "--warm-start-epochs", "3", "--ramp-epochs", "3"],
    # more particles
    "rws-k20": ["--objective", "rws", "--particles", "20"],
    # separate weights for the wake-phi and sleep-phi terms
    "rws-phi0.1": ["--objective", "rws", "--wake-phi-weight", "0.1"],
    "rws-sleep1": ["--objective", "rws", "--sleep-weight", "1"],
    # wake-theta on unweighted forward draws + sleep-phi on dreams: the decoder's and the encoder's utilities of
    # symmetric equilibrium learning (Flach, Schlesinger & Shekhovtsov 2024); tied, both act on the same W
    "wake-sleep-k1": ["--objective", "wake-sleep", "--particles", "1"],
    # AP2 (means and variances) in the class term's forward pass
    "rws-ap2": ["--objective", "rws", "--approximation", "ap2"],
    # the reverse weight below 1 after a warm start
    "rws-warm3-ramp3-w0.3": ["--objective", "rws", "--warm-start-epochs", "3", "--ramp-epochs", "3",
                             "--reverse-weight", "0.3"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=tuple(RUNS), help="train these runs only (default all)")
    p.add_argument("--root", type=Path, default=Path("runs/tied"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = p.parse_args()
    runs = {n: RUNS[n] for n in (args.only or RUNS)}
    rc = run_queue(args.root, runs, COMMON, args.threads, args.dry_run)
    if rc == 0:
        print("evaluate: python analysis/generator_comparison.py --runs "
              + " ".join(str(args.root / n) for n in runs) + " --images 16 --marginal-images 5 --steps 100 --chains 4")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
