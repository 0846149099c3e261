"""Atomic file writes: a crash at any moment leaves the old file or the whole new one."""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union

__all__ = ["atomic_write", "remove_stale_temporaries", "write_error"]


def _prefix(path: Path) -> str:
    return f".{path.name}."


def _create_temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, open for writing.  The kernel applies the
    umask to ``mode``, so the umask need not be read (reading it means setting it, process-wide)."""
    while True:
        tmp = path.parent / f"{_prefix(path)}{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode), tmp
        except FileExistsError:
            continue


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
    and fsync the folder.  ``readable``: the usual umask permissions, else owner-only (0600)."""
    path = Path(path)
    fd, tmp = _create_temporary(path, 0o666 if readable else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write (a full disk, a read-only folder): ``error`` itself, or the one
    that ``torch.save``'s ``RuntimeError`` ("[enforce fail at inline_container.cc:...] unexpected pos")
    carries as its context; ``None`` when the failure was not the file system's."""
    for _ in range(10):   # chains are short; a bound instead of trusting them
        if error is None or isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None
