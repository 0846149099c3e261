"""SIGINT/SIGTERM that stop a command cleanly.

Training (:class:`StopSignals`): the loop finishes its step, saves and raises :class:`TrainingInterrupted`.
Work with nothing to save part way (sampling in ``diagnose``; :func:`stop_on_signals`): the signal raises
:class:`Stopped` at once, and the command reports it in one line with exit status 128 + N.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

__all__ = ["TrainingInterrupted", "StopSignals", "Stopped", "stop_on_signals"]


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


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived inside :func:`stop_on_signals` (a KeyboardInterrupt, so code that
    cleans up after Ctrl-C cleans up after SIGTERM too)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Stopped` where the program is (SIGTERM would
    otherwise end it silently, with no message); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():  # signal() works there only
        yield
        return

    def raise_stopped(signum, frame) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, raise_stopped) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
