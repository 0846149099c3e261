"""How many temperatures does AIS need on a trained net?  The BDMC gap against the number of temperatures.

    python analysis/bdmc_sweep.py RUN_DIR [--steps 10 100 1000] [--images 8] [--chains 8] [--out DIR]

Digits (y, h, x^0) are simulated from the run's reverse model; forward AIS gives a stochastic lower
bound on log p(x^0 | y), AIS backwards from the simulated h an upper bound
(:func:`pyro_dcim.inference.bdmc`).  Each number of temperatures × digits × chains is one row of
``bdmc_sweep.json`` in --out (default ``out/analysis``, untracked); rows already there are kept,
so a longer sweep can be added later (``--steps 10000``), and a running row checkpoints in --out
every 100 temperatures, so a stopped job resumes where it left off.  Writes ``bdmc_sweep.md`` and
``bdmc_sweep.png`` (lower and upper bound against temperatures).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import _report
import torch
from matplotlib.figure import Figure

from pyro_dcim.allocator import keep_freed_memory
from pyro_dcim.fingerprint import net_fingerprint
from pyro_dcim.inference import bdmc


def row_key(start: str, steps: int, images: int, chains: int) -> str:
    return f"{start}-{steps}-{images}x{chains}"


def sweep(run: _report.Run, steps: list[int], images: int, chains: int, start: str, done: dict,
          folder: Path) -> dict:
    """BDMC rows not yet in ``done``; each run checkpoints in ``folder`` as it goes, so a stopped job resumes."""
    for t in steps:
        key = row_key(start, t, images, chains)
        if key in done:
            continue
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bdmc(run.net, images, t, chains, start=start, seed=0,
                       checkpoint=folder / f"bdmc_{run.path.name}_{key}.ckpt")
        done[key] = dict(start=start, steps=t, images=images, chains=chains, lower=res.lower.tolist(),
                         upper=res.upper.tolist(), gap_mean=float(res.gap.mean()), gap_max=float(res.gap.max()),
                         seconds=res.seconds, net=net_fingerprint(run.net))
        print(f"{key}: lower {float(res.lower.mean()):.2f}, upper {float(res.upper.mean()):.2f}, "
              f"gap {done[key]['gap_mean']:.2f} (max {done[key]['gap_max']:.2f}), {res.seconds:.0f} s", flush=True)
    return done


def plot(done: dict, path: Path, title: str) -> None:
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for start, colour in (("forward", "C0"), ("prior", "C1")):
        mine = [r for r in done.values() if r["start"] == start]
        # one point per number of temperatures: the row with the most digits × chains
        rows = sorted({r["steps"]: r for r in sorted(mine, key=lambda r: r["images"] * r["chains"])}.values(),
                      key=lambda r: r["steps"])
        if not rows:
            continue
        t = [r["steps"] for r in rows]
        lo = [-sum(r["lower"]) / len(r["lower"]) for r in rows]
        up = [-sum(r["upper"]) / len(r["upper"]) for r in rows]
        ax.plot(t, lo, "o-", color=colour, label=f"AIS from {start}: upper bound on −log p (forward AIS)")
        ax.plot(t, up, "s--", color=colour, label=f"AIS from {start}: lower bound on −log p (reverse AIS)")
    ax.set_xscale("log")
    ax.set_xlabel("temperatures")
    ax.set_ylabel("−log p(x⁰ | y), nats (mean over digits)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def gap_stderr(row: dict) -> float:
    gaps = torch.tensor(row["upper"], dtype=torch.float64) - torch.tensor(row["lower"], dtype=torch.float64)
    return float(gaps.std() / len(gaps) ** 0.5) if len(gaps) > 1 else float("nan")


def nets_note(done: dict) -> str:
    """Rows may come from several trainings of one run folder (retraining is not bitwise reproducible)."""
    named = {r["net"] for r in done.values() if r.get("net")}
    unnamed = sum(not r.get("net") for r in done.values())
    if len(named) <= 1 and not unnamed:
        return ""
    return (f" The rows may come from different trainings of this folder ({len(named)} net(s) named, {unnamed} "
            "row(s) from before nets were recorded): a retrained run is another net, so read the rows as a trend, "
            "not digit by digit.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained run folder")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--start", choices=("forward", "prior"), default="forward")
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bdmc_sweep.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    done = {row_key(r["start"], r["steps"], r["images"], r["chains"]): r for r in done.values()}  # older keys
    run = _report.load_run(args.run)
    for t in args.steps:   # one row at a time, saved as it lands
        done = sweep(run, [t], args.images, args.chains, args.start, done, args.out)
        path.write_text(json.dumps(done, indent=1) + "\n")
    rows = [[r["start"], r["steps"], r["images"], r["chains"], -sum(r["lower"]) / len(r["lower"]),
             -sum(r["upper"]) / len(r["upper"]), r["gap_mean"], gap_stderr(r), r["gap_max"], r["seconds"]]
            for r in sorted(done.values(), key=lambda r: (r["start"], r["steps"], r["images"] * r["chains"]))]
    header = ["AIS from", "temperatures", "digits", "chains", "−log p upper (forward AIS)",
              "−log p lower (reverse AIS)", "gap (mean)", "± s.e.", "gap (max)", "seconds (both runs)"]
    plot(done, args.out / "bdmc_sweep.png", f"BDMC on digits simulated from {run.label}")
    _report.write_markdown(args.out / "bdmc_sweep.md", "BDMC: the AIS gap against the number of temperatures", [
        f"Generated by {_report.command_line()}. {_report.machine_note(1)}",
        f"Digits simulated from the reverse model of `{run.path}` (y uniform, then h and x⁰ ancestrally, seed 0). "
        "The true −log p(x⁰ | y) of each digit lies between the two bounds (each stochastic: it holds in "
        "expectation); their gap is the error AIS can still have at that many temperatures on such digits. "
        "*± s.e.*: the standard error of the mean gap over digits; a digit's own gap is noisy (both bounds are "
        "Monte Carlo estimates from a few chains), and can come out negative where the true gap is near 0."
        + nets_note(done),
        _report.table(header, rows, 4), "![BDMC sweep](bdmc_sweep.png)"])
    return 0


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
