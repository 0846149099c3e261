"""Inference cost per image: the mean-field pass against ancestral and importance sampling
with S samples (target: S-sample estimates cost <= 1.5 x S x one mean-field pass, i.e. the
samplers are fully vectorised), and Gibbs MCMC in effective samples per second."""

from __future__ import annotations

import time

import pyro
import torch
from timing import sync, time_cases

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.inference import ancestral_marginals, gibbs_posterior, importance_marginals, mean_field_marginals


def bench_inference(device: torch.device, full: bool) -> dict:
    torch.manual_seed(0)
    net = DCIM.from_spec(PAPER_SPECS["dense"], (784,)).to(device)
    batch = 100
    x0 = torch.rand(batch, 784, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows, table, ratios = [], {}, {}
    with torch.no_grad(), pyro.validation_enabled(False):
        mf = time_cases({"mf": lambda: mean_field_marginals(net, x0)}, device, rounds=5, steps=20)["mf"]
        table["mean_field_per_image_s"] = mf / batch
        rows.append(["mean field (1 pass)", 1, mf / batch * 1e6, 1.0, "-"])
        for s in (100, 1000):
            cases = {
                "ancestral": lambda s=s: ancestral_marginals(net, x0, s),
                "importance": lambda s=s: importance_marginals(net, x0, s, y=y),
            }
            t = time_cases(cases, device, rounds=3 if full else 2, steps=1, warmup=1)
            for name, sec in t.items():
                per_sample = sec / (s * mf)
                table[f"{name}_S{s}_per_image_s"] = sec / batch
                ratios[f"{name}_vs_meanfield"] = per_sample if s == 1000 else ratios.get(f"{name}_vs_meanfield")
                rows.append([name, s, sec / batch * 1e6, per_sample, "≤ 1.5"])
    # Gibbs: effective samples per second for the posterior given image and class
    small = DCIM.from_spec([64, 32, 10], (784,)).to(device)
    sync(device)
    start = time.perf_counter()
    # the Gibbs kernel samples the posterior of a binary image
    marg, _ = gibbs_posterior(small, torch.bernoulli(x0[:20]), y[:20], num_samples=200 if full else 100,
                              warmup_steps=50, num_chains=4, num_threads=1 if device.type == "cpu" else None)
    seconds = time.perf_counter() - start
    ess = float(marg.ess.float().mean())
    table["gibbs_784_64_32_10"] = {"images": 20, "chains": 4, "seconds": seconds, "mean_min_bulk_ess": ess,
                                   "ess_per_second_per_image": ess / seconds}
    ratios["ancestral_vs_meanfield"] = ratios.pop("ancestral_vs_meanfield")
    lines = ["\n## Inference cost per image (dense 784-512-512-10, 100 images; "
             "ratio = time / (S × one mean-field pass))",
             "| method | S | µs per image | ratio | target |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.4g} | {r[3]:.3g} | {r[4]} |" for r in rows]
    lines.append(f"\nGibbs (784-64-32-10, 20 images × 4 chains, posterior given image and class): "
                 f"{ess:.0f} effective samples (min over units, mean over images) in {seconds:.1f} s = "
                 f"{ess / seconds:.1f} effective samples per second per image (all images sample in parallel).")
    return {"table": table, "ratios": ratios, "markdown": "\n".join(lines)}
