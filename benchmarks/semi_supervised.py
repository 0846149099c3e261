"""Step time of `generative` on unlabelled images against labelled ones (issue 25: at most 1.5x per image).

    python benchmarks/semi_supervised.py [--rounds 5] [--steps 10] [--device cpu]

Dense 784-512-512-10, untied, K = 5, batch 128, Adam, one thread, interleaved rounds.  Cases: every row
labelled as `--labels all` trains (the old path), every row labelled through the mixed path, and every row
unlabelled with the class summed exactly or proposed by the forward chain (`--unlabelled-class sum|sample`).
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
from pyro_dcim.objectives import get_objective  # noqa: E402
from pyro_dcim.semi_supervised import UNLABELLED  # noqa: E402

# (label, rows unlabelled?, the objective's `unlabelled` setting)
CASES = [("labelled (--labels all)", False, None), ("labelled, mixed path", False, "sum"),
         ("unlabelled, class summed", True, "sum"), ("unlabelled, class sampled", True, "sample")]


def bench(batch: int, device: torch.device, rounds: int, steps: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=gen).bernoulli(generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    objective = get_objective("generative")
    cases = {}
    for label, hidden, unlabelled in CASES:
        net = DCIM.from_spec(PAPER_SPECS["dense"], (784,), tied=False).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        seen = torch.full_like(y, UNLABELLED) if hidden else y

        def step(net=net, opt=opt, seen=seen, unlabelled=unlabelled):
            opt.zero_grad(set_to_none=True)
            objective(net, x, seen, particles=5, reduction="sum", unlabelled=unlabelled).total.backward()
            opt.step()

        cases[label] = step
    with pyro.validation_enabled(False):
        return time_cases(cases, device, rounds=rounds, steps=steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    times = bench(args.batch, torch.device(args.device), args.rounds, args.steps)
    base = times[CASES[0][0]]
    print(f"generative (untied, K=5), dense 784-512-512-10, batch {args.batch}, {args.device}, {args.threads} "
          f"thread(s); median of {args.rounds} rounds of {args.steps} steps")
    for label, t in times.items():
        print(f"{label:<28} {1e3 * t:8.2f} ms/step {t / base:6.2f} x labelled")


if __name__ == "__main__":
    main()
