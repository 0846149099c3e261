"""keep_freed_memory: freed tensors of megabytes are reused instead of page-faulted afresh."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TENSOR_PAGES = 8 * 2 ** 20 // 4096            # one 8 MB tensor, in 4 KB pages

PROBE = """
import resource, sys, torch
from pyro_dcim.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "on" else None
def step():  # a step's worth of 8 MB tensors, freed together
    ts = [torch.ones(2 * 2 ** 20) for _ in range(8)]
    del ts
step(); step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")


def _probe(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@glibc
def test_freed_tensors_are_reused_without_page_faults():
    took, faults = _probe("on")
    _, default_faults = _probe("off")
    assert took == "True"
    # five steps of eight tensors: glibc's defaults fault most pages again, ours fewer than one tensor's
    assert faults < TENSOR_PAGES <= default_faults, (faults, default_faults)


@glibc
def test_user_malloc_tunables_win():
    took, _ = _probe("on", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert took == "False"
    took, _ = _probe("on", MALLOC_TRIM_THRESHOLD_="131072")
    assert took == "False"
