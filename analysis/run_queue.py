"""Train a list of runs one after another, each resumable: the queue behind the long CPU experiments.

A finished run (``summary.json``) is skipped and a stopped one resumed, so the same command continues after
Ctrl-C or ``kill -9`` where it stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_queue(root: Path, runs: dict[str, list[str]], common: list[str], threads: int = 1,
              dry_run: bool = False, minutes: tuple[int, int] = (5, 15)) -> int:
    """Train ``runs`` (name -> fit options, after ``common``) into ``root/NAME``; 0 when all are done."""
    todo = [n for n in runs if not (root / n / "summary.json").exists()]
    lo, hi = minutes
    print(f"{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to train, about {lo}-{hi} min each on one "
          f"core (~{lo * len(todo)}-{hi * len(todo)} min)", flush=True)
    for name in todo:
        out = root / name
        if (out / "checkpoint.pt").exists():
            cmd = [sys.executable, "-m", "pyro_dcim.fit", "--resume", str(out), "--threads", str(threads)]
        else:
            cmd = [sys.executable, "-m", "pyro_dcim.fit", *common, *runs[name], "--threads", str(threads),
                   "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        if dry_run:
            continue
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"{name}: fit exited with {rc}; the same command resumes it", flush=True)
            return rc
        print(f"{name}: done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    print(f"saved {len(runs)} runs under {root}", flush=True)
    return 0
