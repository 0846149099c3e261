"""The cost of the literature's IS-K likelihood (``likelihood --method is``) on the dense net.

    python benchmarks/likelihood_protocol.py                 # 2 threads, K = 5000 (about a minute)
    python benchmarks/likelihood_protocol.py --run runs/full/generative-e30 --out out/bench

One importance particle is one ancestral draw of the forward chain plus one scoring of the reverse
chain; the goal is at most 1.3x one forward plus one reverse mean-field pass (DNN passes of a batch
as large as the particles), so that K = 5,000 on the 10,000 test digits takes about 15 minutes on
2 CPU cores.  Cases are timed interleaved (``timing.time_cases``); prints the ratio and the projected
time for the whole test set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from timing import machine_info, time_cases

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.inference.importance_weighted import importance_weighted_log_likelihood


def _net_and_digits(run: Path | None, images: int, device: torch.device) -> tuple[DCIM, torch.Tensor, torch.Tensor]:
    """A trained run's net and its first binarised test digits, or a fresh net and random ink."""
    torch.manual_seed(0)
    if run is None:
        net = DCIM.from_spec(PAPER_SPECS["dense"], (784,))
        x0 = (torch.rand(images, 784) < 0.13).float()       # MNIST's share of ink
        y = torch.randint(0, 10, (images,))
    else:
        from pyro_dcim import load_model
        from pyro_dcim.data import load_dataset
        from pyro_dcim.training.runs import read_config

        net, config = load_model(run), read_config(run)
        x, y = load_dataset(config.get("dataset", "mnist-subset"), "test", config.get("data_dir"),
                            binarize_mode="sample", seed=0)
        x0, y = x[:images], y[:images]
    return net.to(device).eval(), x0.to(device), y.to(device)


def bench(device: torch.device, particles: int, images: int, rounds: int, run: Path | None = None) -> dict:
    net, x0, y = _net_and_digits(run, images, device)
    rows = particles * images
    xs = x0.flatten(1).repeat(particles, 1)
    # one-hot rows: the reverse pass per row (class indices would share one pass per class)
    ys = torch.nn.functional.one_hot(y.repeat(particles), net.num_classes).to(xs)
    xs = xs.reshape(len(xs), *net.input_shape)

    def passes():
        net.forward_mean_field(xs)
        net.reverse_mean_field(ys)

    with torch.no_grad():
        t = time_cases({"is": lambda: importance_weighted_log_likelihood(net, x0, y, particles, warn=False),
                        "mean_field": passes}, device, rounds=rounds, steps=1, warmup=1)
    per_particle = t["is"] / rows
    per_pass = t["mean_field"] / rows
    return {"net": str(run) if run else "fresh dense 784-512-512-10",
            "particles": particles, "images": images, "seconds_per_particle": per_particle,
            "seconds_per_forward_and_reverse_mean_field_pass": per_pass,
            "particle_vs_passes": per_particle / per_pass, "goal": 1.3,
            "projected_test_set_minutes_K5000": per_particle * 5000 * 10_000 / 60}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--particles", type=int, default=5000)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--run", type=Path, help="a trained run folder (its units flip rarely: the fast path); "
                                            "default a fresh net, whose units flip half the time")
    p.add_argument("--out", type=Path, help="write likelihood_protocol.json here (default: print only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {"machine": machine_info(device), **bench(device, args.particles, args.images, args.rounds, args.run)}
    print(f"one IS particle: {result['seconds_per_particle'] * 1e6:.1f} us = {result['particle_vs_passes']:.2f}x one "
          f"forward + one reverse mean-field pass (goal <= 1.3); K = 5000 on 10,000 digits: "
          f"~{result['projected_test_set_minutes_K5000']:.0f} min on {args.threads} thread(s) of {device}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "likelihood_protocol.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
