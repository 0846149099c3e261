"""``python -m pyro_dcim.fit`` in a child process that stops itself (SIGSTOP) at a set point of the run.

The fault tests signal a run mid-training.  Waiting for a metrics file and then signalling raced
the run: on a loaded machine the child could finish before the signal was sent.  A child that
holds still at a known step makes the point where the signal lands deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import os, signal, sys
import pyro_dcim.training.loop as train_module
from pyro_dcim.cli import fit
pause_at, lr_at = float(sys.argv[1]), train_module.lr_at
def lr_at_then_pause(cfg, progress):
    global pause_at
    if progress >= pause_at:    # the first step at this fraction of the run: stop until signalled
        pause_at = float("inf")
        os.kill(os.getpid(), signal.SIGSTOP)
    return lr_at(cfg, progress)
train_module.lr_at = lr_at_then_pause
sys.exit(fit.main(sys.argv[2:]))
"""


def start(args: list[str], pause_at: float, **popen) -> subprocess.Popen:
    """Start ``fit`` with ``args``; it stops itself before the first step at fraction ``pause_at`` of the run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(pause_at), *args], env=env, cwd=ROOT, **popen)


def wait_until_paused(proc: subprocess.Popen) -> None:
    """Block until the child has stopped itself; it must not have exited."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the run exited (status {status}) before it reached its pause"


def signal_and_resume(proc: subprocess.Popen, signum: int) -> None:
    """Deliver ``signum`` to the paused child, then let it run on."""
    os.kill(proc.pid, signum)
    os.kill(proc.pid, signal.SIGCONT)
