"""The likelihood command's report: per-digit rows gathered into ``per_image-KIND.csv`` and
``summary-KIND.json`` (KIND: ``is-forward``, ``is-fitted`` or ``ais``), and the lines it prints.
Every figure is ``-log p`` in nats (named ``nll``)."""

from __future__ import annotations

import math
import os
from typing import Optional

import torch

from ..inference.weights import KHAT_THRESHOLD
from .results import ResultFolder

__all__ = ["summarise", "describe", "mean_se", "calibration_digits"]

PROTOCOL = ("binarised test digits, one Bernoulli draw per pixel with a fixed seed (the 'dynamically "
            "binarised' set of the literature; not the static Larochelle set)")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error over the values (NaN for one value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")


def _block(rows: list[dict], key: str) -> Optional[dict]:
    if not rows or key not in rows[0]:
        return None
    mean, se = mean_se([r[key] for r in rows])
    err = "stderr" + key[len("nll"):]
    mc = math.sqrt(sum(r[err] ** 2 for r in rows)) / len(rows)
    return {"mean": mean, "se_images": se, "se_mc": mc}


def calibration_digits(seed: int, n: int, count: int) -> list[int]:
    """``count`` digits of the first ``n``, drawn at random (fixed by ``seed``), in index order."""
    g = torch.Generator().manual_seed(seed + 7919)
    return sorted(torch.randperm(n, generator=g)[:count].tolist())


def summarise(args, folder: ResultFolder, kind: str) -> dict:
    """Gather every rank's chunks of ``kind``; rank 0 writes ``per_image-KIND.csv`` and ``summary-KIND.json``."""
    n = args.images
    rows = folder.rows(kind, range(n))
    s: dict = {"run": str(args.run_dir), "method": args.method, "images": n, "split": args.split,
               "protocol": PROTOCOL, "seed": args.seed, "class_prior": args.class_prior,
               "unsupervised": getattr(args, "unsupervised", False),
               "world_size": int(os.environ.get("WORLD_SIZE", 1))}
    if args.method == "is":
        proposal = "the run's forward chain q(h | x0)" if args.proposal == "forward" else \
            (f"a copy of the run's forward chain fitted to the generator's posterior ({args.proposal_epochs} epochs "
             f"of wake-phi, K = {args.proposal_particles}, on the training digits)")
        s.update(particles=args.particles, proposal=proposal,
                 unconditional="class summed out exactly: log sum_c p(c) p(x0, h | c) / q(h | x0)")
    else:
        s.update(steps=args.steps, chains=args.chains, start=args.start, schedule=args.schedule)
    s["seconds"] = sum(r.get("seconds", 0.0) for r in rows)
    s["files"] = {"per_image": f"per_image-{kind}.csv", "summary": f"summary-{kind}.json"}
    s["nll_conditional"] = _block(rows, "nll_conditional")
    if "nll" in rows[0]:
        s["nll_unconditional"] = _block(rows, "nll")
    khats = [r["khat_conditional"] for r in rows if not math.isnan(r["khat_conditional"])]
    s["khat"] = {"computed": len(khats), "max": max(khats) if khats else None,
                 "flagged": sum(k > KHAT_THRESHOLD for k in khats), "threshold": KHAT_THRESHOLD}
    if args.calibrate:
        picked = calibration_digits(args.seed, args.split_size, args.calibrate)
        cal = folder.rows("calibration", picked)
        by_image = {r["image"]: r for r in folder.rows(kind, picked)}
        bias = [by_image[r["image"]]["nll_conditional"] - r["nll_conditional"] for r in cal]
        b_mean, b_se = mean_se(bias)
        s["calibration"] = {"images": len(cal), "seconds": sum(r.get("seconds", 0.0) for r in cal),
                            "steps": args.steps, "chains": args.chains,
                            "ais_nll_conditional": _block(cal, "nll_conditional"),
                            "is_nll_conditional": mean_se([by_image[r["image"]]["nll_conditional"] for r in cal]),
                            "bias_mean": b_mean, "bias_se": b_se,
                            "bias_note": "IS minus AIS -log p(x0 | y) on the same digits (> 0: IS overstates)"}
    bdmc_path = folder.out / "bdmc.json"
    if bdmc_path.is_file():
        import json

        s["bdmc"] = json.loads(bdmc_path.read_text())
    if int(os.environ.get("RANK", 0)) == 0:
        folder.write_csv(f"per_image-{kind}.csv", rows)
        if args.calibrate:
            folder.write_csv("calibration.csv", cal)
        folder.write_json(f"summary-{kind}.json", s)
    return s


def describe(s: dict) -> str:
    """The printed report."""
    if s["method"] == "is":
        how = f"importance sampling, K = {s['particles']} particles from {s['proposal']}"
    else:
        how = f"AIS, {s['steps']} temperatures x {s['chains']} chains from the {s['start']} chain"
    c = s["nll_conditional"]
    lines = [f"{s['run']}: {s['images']} {s['split']} digits, {how}",
             f"  protocol: {s['protocol']}",
             f"  -log p(x0 | y) = {c['mean']:.2f} ± {c['se_images']:.2f} nats (± over digits; Monte Carlo ± "
             f"{c['se_mc']:.2f})"]
    if s.get("unsupervised"):
        lines.append("  (an unsupervised run: its components are not the classes, so -log p(x0 | y) conditions on "
                     "component y = the digit's label and means nothing; read -log p(x0))")
    u = s.get("nll_unconditional")
    if u:
        lines.append(f"  -log p(x0)     = {u['mean']:.2f} ± {u['se_images']:.2f} nats (Monte Carlo ± {u['se_mc']:.2f}; "
                     f"p(y) {s['class_prior']})")
    k = s["khat"]
    if k["computed"]:
        lines.append(f"  Pareto k̂ of -log p(x0 | y): max {k['max']:.2f}; {k['flagged']} of {s['images']} digits "
                     f"above {k['threshold']} (their error bars cannot be trusted)")
    else:
        lines.append("  Pareto k̂: not computable (needs >= 21 chains or particles); the error bars are unchecked")
    cal = s.get("calibration")
    if cal:
        a = cal["ais_nll_conditional"]
        lines.append(f"  calibration on {cal['images']} random digits: AIS ({cal['steps']} x {cal['chains']}) "
                     f"-log p(x0 | y) = {a['mean']:.2f}, IS {cal['is_nll_conditional'][0]:.2f}: IS bias "
                     f"{cal['bias_mean']:+.2f} ± {cal['bias_se']:.2f} nats")
    b = s.get("bdmc")
    if b:
        lines.append(f"  BDMC on {b['images']} simulated digits: -log p(x0 | y) between {b['nll_lower']:.2f} and "
                     f"{b['nll_upper']:.2f} on average, gap {b['gap_mean']:.2f} nats (max {b['gap_max']:.2f}), "
                     f"{b['seconds']:.0f} s")
    lines.append(f"  computing took {_duration(s['seconds'])}" + (
        f" (+ {_duration(cal['seconds'])} of calibration AIS)" if cal else ""))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"
