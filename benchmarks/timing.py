"""Interleaved wall-clock timing: every case is timed in each round, so drifts in machine
load hit all cases alike and ratios between cases stay meaningful on a shared machine."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cases(cases: dict[str, Callable[[], object]], device: torch.device, rounds: int = 5,
               steps: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median over ``rounds`` of the mean seconds per call of each case."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(v) for name, v in samples.items()}


def machine_info(device: torch.device) -> dict[str, object]:
    import pyro

    import pyro_dcim

    info: dict[str, object] = {
        "python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
        "pyro_dcim": pyro_dcim.__version__, "platform": platform.platform(), "processor": platform.machine(),
        "cpu_threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a training-step benchmark: batch, interleaved rounds, steps per round, device, threads."""
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
