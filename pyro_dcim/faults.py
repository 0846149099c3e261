"""What lets a run survive faults: RNG state to checkpoint, and SIGINT/SIGTERM that stop cleanly."""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["TrainingInterrupted", "StopSignals", "rng_state", "set_rng_state", "seed_everything"]


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run after finishing a step and saving a checkpoint."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int) -> None:
        self.signum, self.run_dir, self.epoch, self.step = signum, run_dir, epoch, step
        where = f"after step {step} of epoch {epoch + 1}" if step else f"before epoch {epoch + 1}"
        super().__init__(f"{signal.Signals(signum).name}: stopped {where} and saved {run_dir / 'checkpoint.pt'}; "
                         f"resume with: python -m pyro_dcim.fit --resume {run_dir}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "sampling": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["sampling"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StopSignals:
    """While active, SIGINT/SIGTERM only set ``received``; the loop finishes its step, saves and
    stops.  A second signal acts as usual (so a stuck run can still be killed)."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
        signal.signal(signum, self._previous[signum])

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal() works there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
