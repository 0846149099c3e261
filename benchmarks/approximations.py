"""Cost of the approximations beside (2): the AP2 pass against the first-order pass
(goal ≤ 2.2×: twice the products at most), as a pass and as a training step, and the
variational fixed point per sweep.

    python benchmarks/approximations.py [--full] [--out runs/benchmarks]

Prints a table; writes ``approximations.json`` under ``--out`` (untracked by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's package first
from timing import machine_info, sync, time_cases  # noqa: E402

from pyro_dcim import DCIM, PAPER_SPECS  # noqa: E402
from pyro_dcim.approximations.variational import fit_mean_field  # noqa: E402
from pyro_dcim.objectives import bidirectional_loss  # noqa: E402


def _step(net: DCIM, x0: torch.Tensor, y: torch.Tensor, approximation: str) -> None:
    net.zero_grad(set_to_none=True)
    bidirectional_loss(net, x0, y, approximation=approximation).total.backward()


def bench_approximations(device: torch.device, full: bool) -> dict:
    rounds, steps = (7, 20) if full else (5, 10)
    rows, ratios = [], {}
    for arch, batch in [("dense", 100), ("dense", 1000), ("cnn", 32)]:
        torch.manual_seed(0)
        shape = (784,) if arch == "dense" else (1, 28, 28)
        net = DCIM.from_spec(PAPER_SPECS[arch], shape).to(device)
        x0 = torch.rand(batch, *shape, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        n = steps if arch == "dense" else max(2, steps // 4)
        with torch.no_grad():
            t = time_cases({a: (lambda a=a, net=net, x0=x0: net.forward_mean_field(x0, approximation=a))
                            for a in ("first-order", "ap2")}, device, rounds, n)
        s = time_cases({a: (lambda a=a, net=net, x0=x0, y=y: _step(net, x0, y, a))
                        for a in ("first-order", "ap2")}, device, rounds, n)
        key = f"{arch}/{batch}"
        ratios[f"ap2_pass_vs_first_order/{key}"] = t["ap2"] / t["first-order"]
        ratios[f"ap2_step_vs_first_order/{key}"] = s["ap2"] / s["first-order"]
        rows.append([key, t["first-order"] * 1e3, t["ap2"] * 1e3, t["ap2"] / t["first-order"],
                     s["first-order"] * 1e3, s["ap2"] * 1e3, s["ap2"] / s["first-order"]])

    # the variational fixed point: seconds per sweep of the reverse fit given image and class (dense, batch 100)
    torch.manual_seed(0)
    net = DCIM.from_spec(PAPER_SPECS["dense"], (784,)).to(device)
    x0 = torch.bernoulli(torch.full((100, 784), 0.3, device=device))
    start = net.class_state(torch.randint(0, 10, (100,), device=device))
    with torch.no_grad():
        first = time_cases({"pass": lambda: net.forward_mean_field(x0)}, device, rounds, steps)["pass"]
        sync(device)
        began = time.perf_counter()
        fit = fit_mean_field(net, start, direction="reverse", layer=net.num_layers, end=x0,
                             x0_state=net.units.state(x0), iterations=10, tolerance=0.0)
        sync(device)
    per_sweep = (time.perf_counter() - began) / fit.iterations
    ratios["variational_sweep_vs_first_order_pass/dense/100"] = per_sweep / first
    return {"rows": rows, "ratios": ratios, "variational_seconds_per_sweep": per_sweep,
            "first_order_pass_seconds": first}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="more rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = bench_approximations(device, args.full)
    report["machine"] = machine_info(device)
    print("| arch/batch | (2) pass ms | AP2 pass ms | AP2/(2) | (2) step ms | AP2 step ms | AP2/(2) step |")
    print("|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        print("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in r) + " |")
    print(f"variational fixed point (dense 784-512-512-10, batch 100, reverse given image and class): "
          f"{report['variational_seconds_per_sweep'] * 1e3:.1f} ms per sweep = "
          f"{report['ratios']['variational_sweep_vs_first_order_pass/dense/100']:.1f}× one first-order pass")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "approximations.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'approximations.json'}")
    return report


if __name__ == "__main__":
    main()
