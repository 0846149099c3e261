"""keep_freed_memory: freed blocks of megabytes (CPU tensors) are reused instead of page-faulted afresh."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK_PAGES = 8 * 2 ** 20 // 4096             # one 8 MB block, in 4 KB pages

# malloc directly, as PyTorch's CPU allocator does, without Python's own allocations in between
PROBE = """
import ctypes, resource, sys
from pyro_dcim.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "on" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def step():  # 128 MB of 8 MB blocks written and freed together: more than glibc's largest trim threshold
    blocks = [libc.malloc(8 * 2 ** 20) for _ in range(16)]
    for b in blocks:
        ctypes.memset(b, 1, 8 * 2 ** 20)
    for b in blocks:
        libc.free(b)
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
def test_freed_blocks_are_reused_without_page_faults():
    took, faults = _probe("on")
    _, default_faults = _probe("off")
    assert took == "True"
    # five steps of sixteen blocks: glibc's defaults page-fault all eighty afresh, ours at most one
    assert faults <= BLOCK_PAGES and default_faults >= 40 * BLOCK_PAGES, (faults, default_faults)


@glibc
def test_user_malloc_tunables_win():
    took, _ = _probe("on", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert took == "False"
    took, _ = _probe("on", MALLOC_TRIM_THRESHOLD_="131072")
    assert took == "False"
