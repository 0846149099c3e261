"""Atomic file writes: a crash at any moment leaves the old file or the whole new one."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

__all__ = ["atomic_write", "remove_stale_temporaries"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Union[str, os.PathLike]) -> list[Path]:
    """Delete the temporaries that writes of ``path`` left behind when killed mid-write; return them.

    Call it only where nothing else is writing ``path`` (e.g. when a run starts or resumes).
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f"{glob.escape(_prefix(path))}*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], object], readable: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, flush, fsync, rename it over ``path``
    and fsync the folder.  ``readable``: the usual umask permissions (``mkstemp`` makes 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        if readable:
            os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
