"""Keep freed host memory in the process, for CPU training and sampling (glibc only).

PyTorch's CPU tensors come straight from ``malloc``.  glibc hands blocks above its
mmap threshold back to the system when they are freed and trims the heap whenever
enough of its top is free, so a training step that frees and reallocates tensors of
megabytes page-faults every one of them afresh: on the paper's CNN that was a fifth of
the sampled-layer (22) step on 2 CPU cores.  :func:`keep_freed_memory` raises both
thresholds so that freed blocks are reused instead.  The price is that the process
keeps its peak heap until it exits, so the command-line tools call it and the library
never does on import.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# glibc's <malloc.h> parameter numbers
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest mmap threshold glibc accepts on 64-bit systems; bigger blocks are always mapped.
MMAP_THRESHOLD = 32 * 2 ** 20
#: Never give the heap's free top back (``mallopt`` takes an ``int``).
TRIM_THRESHOLD = 2 ** 31 - 1


def _user_tuned() -> bool:
    """Whether the user set glibc's malloc tunables, which then win over ours."""
    return "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in os.environ)


def keep_freed_memory() -> bool:
    """Make glibc keep and reuse freed blocks up to :data:`MMAP_THRESHOLD` and never trim the heap.

    Returns whether the setting took effect: ``False`` off glibc (macOS, Windows, musl's
    stub) and when ``GLIBC_TUNABLES`` or ``MALLOC_*_`` variables already set malloc's
    behaviour.  Process-wide and lasting: call it from an application, not a library.
    """
    if not sys.platform.startswith("linux") or _user_tuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
