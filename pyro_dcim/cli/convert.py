"""``python -m pyro_dcim.convert PATH [PATH ...]``: rewrite files written by an older pyro_dcim
(which need Python objects to load) as the plain data every command loads with ``weights_only=True``.

    python -m pyro_dcim.convert runs/old-run                  # its checkpoint.pt
    python -m pyro_dcim.convert ais.pt bdmc.forward-done      # AIS / BDMC resume files

This is the one place that loads a file with ``weights_only=False``, which runs any code the file
holds: convert only files you trust (written by you with an older pyro_dcim).  Each converted file
is rewritten atomically in place, and the original is kept beside it as ``<file>.unsafe-backup``
(no command reads it; delete it once the converted run works).  A file that already loads safely
is left as it is.  Exit status: 0 done, 2 bad input (one line on stderr per file).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from ..inference.bdmc import forward_done
from ..safe_load import CheckpointError, UnsafeFileError, safe_load
from ..training.atomic import atomic_write
from ..training.checkpoint import CHECKPOINT_NAME
from ..training.rng import plain_numpy_state
from .errors import EXIT_BAD_INPUT, EXIT_OK, OneLineParser, report

__all__ = ["main", "build_parser", "convert_file", "BACKUP_SUFFIX"]

PROG = "python -m pyro_dcim.convert"
BACKUP_SUFFIX = ".unsafe-backup"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help=f"a run folder (its {CHECKPOINT_NAME}), a checkpoint .pt, an AIS checkpoint or a BDMC "
                        "PREFIX.forward-done file")
    return p


def _kind(data: Any) -> Optional[str]:
    """Which pyro_dcim file ``data`` is, by its keys (``None``: none of them)."""
    if isinstance(data, dict):
        if isinstance(data.get("model"), dict):
            return "checkpoint"
        if {"x0", "y", "num_steps", "start", "result", "rng"} <= data.keys():
            return "BDMC forward-done file"
        if {"key", "parts"} <= data.keys():
            return "AIS checkpoint"
    return None


def _plain(data: dict, kind: str) -> dict:
    """``data`` with the objects older versions stored replaced by the plain data loaded today."""
    if kind == "checkpoint" and isinstance(data.get("rng"), dict) and "numpy" in data["rng"]:
        data = dict(data, rng=dict(data["rng"], numpy=plain_numpy_state(data["rng"]["numpy"])))
    elif kind == "BDMC forward-done file" and dataclasses.is_dataclass(data["result"]):
        data = forward_done(data["x0"], data["y"], data["num_steps"], data["start"], data["result"], data["rng"])
    return data  # AIS checkpoints always were plain data


def _serialised(data: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def convert_file(path: Path, warn: Callable[[str], object] = _to_stderr) -> str:
    """Convert one trusted file in place (original kept as ``<path>.unsafe-backup``); what was done, in words.

    Raises :class:`CheckpointError` for a missing, unreadable or unknown file, or one that still needs
    Python objects after the conversion (nothing is written then).
    """
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no file at {path}; give a run folder holding {CHECKPOINT_NAME} or a file")
    try:
        safe_load(path)
        return f"{path}: already loads as plain data; left as it is"
    except UnsafeFileError:
        pass
    warn(f"{PROG}: warning: loading {path} with weights_only=False, which runs any code it holds; "
         "you are trusting this file")
    original = path.read_bytes()
    try:
        data = torch.load(io.BytesIO(original), map_location="cpu", weights_only=False)  # the one trusting load
    except Exception as e:  # truncated or foreign files raise many types
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    kind = _kind(data)
    if kind is None:
        raise CheckpointError(f"{path}: not a pyro_dcim checkpoint, AIS checkpoint or BDMC forward-done file; "
                              "left as it is")
    try:
        converted = _serialised(_plain(data, kind))
    except Exception as e:  # e.g. an object torch.save cannot write (a crafted file's open handle)
        raise CheckpointError(f"{path}: this {kind} cannot be converted ({type(e).__name__}: {e}); "
                              "left as it is") from None
    try:  # the proof: the new bytes load as plain data
        safe_load(io.BytesIO(converted), what=kind)
    except UnsafeFileError as e:
        raise CheckpointError(f"{path}: this {kind} holds Python objects the conversion does not know "
                              f"({e.asked_for}); left as it is") from None
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    atomic_write(backup, lambda f: f.write(original))   # the backup first: a crash never loses the original
    atomic_write(path, lambda f: f.write(converted))
    return f"{path}: {kind} converted to plain data; the original is kept as {backup}"


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    code = EXIT_OK
    for path in args.paths:
        try:
            print(convert_file(path))
        except (CheckpointError, OSError) as e:
            code = report(prog, e, EXIT_BAD_INPUT)
    return code
