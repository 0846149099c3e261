"""Step time of the likelihood-based objectives against the discriminative step.

    python benchmarks/generative.py [--rounds 5] [--steps 10] [--device cpu]

Dense 784-512-512-10, batch 128, Adam, one thread: seconds per step of each objective, its
ratio to the discriminative step, and for the K-particle objectives that ratio per particle
(K particles cost about K samples of the forward chain plus K scores of both chains).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_step_arguments, time_cases  # noqa: E402

from pyro_dcim import DCIM, PAPER_SPECS  # noqa: E402
from pyro_dcim.objectives import get_objective, objective_settings  # noqa: E402

CASES = [("discriminative", {}, False), ("bidirectional", {}, False), ("sampled-layer", {}, False),
         ("rws", {"particles": 1}, False), ("rws", {"particles": 5}, False), ("rws", {"particles": 10}, False),
         ("wake-sleep", {"particles": 5}, False), ("rws", {"particles": 5}, True),
         ("generative", {"particles": 5}, True)]   # untied rws, wake-phi 0.01: the fit default


def bench_generative(batch: int, device: torch.device, rounds: int, steps: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=gen).bernoulli(generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    cases = {}
    for name, settings, untie in CASES:
        net = DCIM.from_spec(PAPER_SPECS["dense"], (784,), tied=not untie).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        objective = get_objective(name)
        # as the training loop calls it: each objective gets the settings it takes
        own = objective_settings(objective, dict(report_reverse=False, reduction="sum", **settings))

        def step(net=net, opt=opt, objective=objective, own=own):
            opt.zero_grad(set_to_none=True)
            objective(net, x, y, **own).total.backward()
            opt.step()

        label = name + (f" K={settings['particles']}" if settings else "") + (" --untie" if untie else "")
        cases[label] = step
    with pyro.validation_enabled(False):
        return time_cases(cases, device, rounds=rounds, steps=steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    times = bench_generative(args.batch, torch.device(args.device), args.rounds, args.steps)
    base = times["discriminative"]
    print(f"dense 784-512-512-10, batch {args.batch}, {args.device}, {args.threads} thread(s); median of "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"{'objective':<22} {'ms/step':>8} {'x disc.':>8} {'x disc. per particle':>21}")
    for label, t in times.items():
        k = int(label.split("K=")[1].split()[0]) if "K=" in label else None
        per = f"{t / base / k:21.2f}" if k else " " * 21
        print(f"{label:<22} {1e3 * t:8.2f} {t / base:8.2f} {per}")


if __name__ == "__main__":
    main()
