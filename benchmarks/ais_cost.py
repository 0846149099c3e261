"""The cost of AIS: one temperature against one Gibbs sweep, and the Gibbs sweep itself.

    python benchmarks/ais_cost.py [--images 100] [--chains 4] [--cnn] [--out DIR]

AIS costs one Gibbs sweep per temperature (:class:`pyro_dcim.inference.energy.ChainEnergy`) plus the
weight increment; target: seconds per temperature ≤ 1.2 × one sweep of the (reverse) posterior kernel
on the same chains.  From the prior the tempered sweep has the posterior's terms; from the forward
chain it also carries the forward chain's terms (x¹ then has two children to score), which costs
more per temperature and pays back in far fewer temperatures.

Prints seconds per sweep and per temperature, their ratio, and images × chains per
second, for the dense 784-512-512-10 net (and with ``--cnn`` the paper's CNN, 8 images × 4 chains);
writes ``ais_cost.json`` to --out (default ``out/benchmarks``, untracked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from timing import machine_info, time_cases

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_dcim import DCIM, PAPER_SPECS  # noqa: E402
from pyro_dcim.allocator import keep_freed_memory  # noqa: E402
from pyro_dcim.inference.ais import _draw_start, _increment, _weights  # noqa: E402
from pyro_dcim.inference.energy import ChainEnergy, posterior_weights  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "out" / "benchmarks"


def bench(net: DCIM, images: int, chains: int, rounds: int) -> dict:
    torch.manual_seed(0)
    x0 = torch.bernoulli(torch.full((images, *net.input_shape), 0.3))
    y = torch.randint(net.num_classes, (images,))
    energy = ChainEnergy(net, x0, y)
    bits = _draw_start(net, "forward", x0, y, chains)
    beta = 0.5

    def gibbs():
        energy.sweep(bits, posterior_weights("reverse"))

    def ais_step(start: str):   # what one temperature of ais_log_likelihood does
        _increment(energy, start, bits)
        energy.sweep(bits, _weights(start, beta))

    with torch.no_grad():
        t = time_cases({"gibbs": gibbs, "prior": lambda: ais_step("prior"), "forward": lambda: ais_step("forward")},
                       torch.device("cpu"), rounds=rounds, steps=1, warmup=1)
    rows = images * chains
    out = {"images": images, "chains": chains, "gibbs_sweep_s": t["gibbs"]}
    for start in ("prior", "forward"):
        out[start] = {"temperature_s": t[start], "ratio": t[start] / t["gibbs"], "rows_per_s": rows / t[start]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cnn", action="store_true", help="also the paper's CNN (8 images x 4 chains; minutes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine_info(torch.device("cpu"))}
    dense = DCIM.from_spec(PAPER_SPECS["dense"], (784,))
    result["dense"] = bench(dense, args.images, args.chains, args.rounds)
    if args.cnn:
        cnn = DCIM.from_spec(PAPER_SPECS["cnn"], (1, 28, 28))
        result["cnn"] = bench(cnn, 8, 4, 1)
    print("| net | images x chains | Gibbs sweep (s) | AIS start | AIS temperature (s) | ratio (target ≤ 1.2) | "
          "images x chains per s |")
    print("|---|---|---|---|---|---|---|")
    for name in ("dense", "cnn"):
        for start in ("prior", "forward") if name in result else ():
            r, a = result[name], result[name][start]
            print(f"| {name} | {r['images']} x {r['chains']} | {r['gibbs_sweep_s']:.3f} | {start} | "
                  f"{a['temperature_s']:.3f} | {a['ratio']:.2f} | {a['rows_per_s']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ais_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'ais_cost.json'}")
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
