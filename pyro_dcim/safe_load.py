"""Loading the files a run leaves behind without running anything they hold.

A plain ``torch.load`` that trusts the file unpickles arbitrary objects, so a crafted ``checkpoint.pt``
runs its own code when it is opened.  Every checkpoint, AIS / BDMC resume file and classifier
is therefore read with ``weights_only=True``: tensors, dicts, lists, tuples, numbers, strings and
``None`` only, and the library writes nothing else.  A file that asks for any other Python
object is refused with :class:`CheckpointError` before anything in it is built.  Files written
by earlier versions (numpy RNG states, result dataclasses) are converted once, deliberately, by
``python -m pyro_dcim.convert`` (:mod:`pyro_dcim.cli.convert`), the one place that trusts a file.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any, Union

import torch

__all__ = ["CheckpointError", "UnsafeFileError", "safe_load", "CONVERT_COMMAND"]

CONVERT_COMMAND = "python -m pyro_dcim.convert"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit what it is loaded into."""


class UnsafeFileError(CheckpointError):
    """A file that needs Python objects (code) to load: refused unread; convert it if it is trusted.
    ``asked_for``: the first global it names (e.g. ``numpy._core.multiarray._reconstruct``)."""

    def __init__(self, message: str, asked_for: str = "") -> None:
        super().__init__(message)
        self.asked_for = asked_for


def _global_asked_for(message: str) -> str | None:
    """The Python global a ``weights_only`` refusal names, or ``None`` if it refused something else."""
    if "Weights only load failed" not in message:
        return None
    found = re.search(r"GLOBAL\s+(\S+)", message)
    return found.group(1) if found else None


def safe_load(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu",
              what: str = "checkpoint", convertible: bool = True) -> Any:
    """``torch.load(path, weights_only=True)``: plain data only, nothing in the file is run.

    Raises :class:`UnsafeFileError` (one line; it names :data:`CONVERT_COMMAND` when ``convertible``:
    a kind of file older versions wrote with objects) for a file that needs other Python objects,
    :class:`CheckpointError` for one that cannot be read.
    """
    try:
        # a raw (non-torch) pickle makes the restricted unpickler warn on stderr: CLI errors stay one line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign files raise many types
        name = _global_asked_for(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if name is not None:
            hint = (f"; if it was written by an older pyro_dcim and you trust it, convert it once with: "
                    f"{CONVERT_COMMAND} {path}") if convertible else ""
            raise UnsafeFileError(f"{path}: this {what} asks to load Python objects ({name}), which pyro_dcim "
                                  f"never does (it could run code){hint}", asked_for=name) from None
        raise CheckpointError(f"{path}: unreadable {what} ({type(e).__name__}: {_reason(e)})") from None

def _reason(error: BaseException) -> str:
    """The informative line of a load error (torch's refusals open with paragraphs of advice)."""
    message = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else ""
