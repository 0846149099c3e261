"""Output folders and files of the command lines, checked (and made) before any work is done.

A read-only folder, a file where a folder is wanted or a full disk must be one line and exit
status 2 at the start, not a traceback after an hour of sampling.  Standard library only, like
:mod:`.errors` (``pyro_dcim.training.runs`` uses it for the run folder too).

    out = prepare_output_dir(args.out)          # raises OutputError (a ValueError) with one line
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["OutputError", "prepare_output_dir", "prepare_output_file"]

PathLike = Union[str, os.PathLike]
#: bytes the probe writes and syncs: a disk that cannot take them is full now, not an hour later
PROBE_BYTES = 65536


class OutputError(ValueError):
    """An output folder or file that cannot be written; the message is one line that says why."""


def _blocking_file(path: Path) -> Path | None:
    """``path`` itself or the nearest existing folder above it when that is a file (so no folder can be made)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def prepare_output_dir(path: PathLike, what: str = "output folder", option: str = "--out") -> Path:
    """Make the folder ``path`` (and its parents) and prove it writable with a synced probe file.

    Raises :class:`OutputError` naming ``what`` (e.g. ``"run folder"``) when ``path`` or a folder
    above it is a file, or when the folder cannot be made or written (read-only, full disk).
    """
    path = Path(path)
    blocking = _blocking_file(path)
    if blocking == path:
        raise OutputError(f"{option} {path} is a file, not a folder; {option} names the {what} to write into")
    if blocking is not None:
        raise OutputError(f"cannot make {what} {path}: {blocking} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(f"cannot write to {what} {path}: {e.strerror or e}") from None
    return path


def prepare_output_file(path: PathLike, what: str = "output file", option: str = "--out") -> Path:
    """Check that the file ``path`` can be written: not a folder, its folder made and writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give the {what}'s name, e.g. {path / 'samples.png'}")
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        raise OutputError(f"cannot write {what} {path}: {blocking} is a file, not a folder")
    prepare_output_dir(path.parent, what=f"folder of the {what}", option=option)
    return path
