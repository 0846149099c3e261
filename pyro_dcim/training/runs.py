"""The run folder: creating it safely, ``config.json`` with versions, and the metrics files.

A run folder holds ``config.json`` (the :class:`~pyro_dcim.training.TrainConfig` plus
library versions and the command line), ``checkpoint.pt`` (written atomically by
:func:`pyro_dcim.training.checkpoint.save_checkpoint`), ``metrics.jsonl`` and ``metrics.csv``
(one row per epoch), ``summary.json`` (final validation and test numbers) and PNG
figures.  Only the main process of a distributed run writes here (see :mod:`pyro_dcim.training.loop`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Iterable

from ..cli.output import OutputError, prepare_output_dir
from .atomic import atomic_write, remove_stale_temporaries
from .metrics import METRIC_COLUMNS

__all__ = ["RunDirError", "RUN_FILES", "prepare_run_dir", "remove_unsaved_run", "versions", "write_json", "read_config",
           "write_metrics", "append_metrics", "METRIC_COLUMNS"]

CONFIG_NAME = "config.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_NAME = "summary.json"
#: files that mark a folder as holding a run (and that --overwrite removes)
RUN_FILES = (CONFIG_NAME, "checkpoint.pt", METRICS_JSONL, METRICS_CSV, SUMMARY_NAME)

class RunDirError(ValueError):
    """A run folder that cannot be used: it holds another run, or cannot be written."""


def prepare_run_dir(path: os.PathLike | str, resume: bool = False, overwrite: bool = False) -> Path:
    """Create ``path`` and prove it writable before any training starts.

    A folder that already holds a run is refused unless ``resume`` (continue it)
    or ``overwrite`` (its run files, and only those, are deleted first).
    """
    run_dir = Path(path)
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "checkpoint.pt").is_file():
            raise RunDirError(f"cannot resume: {run_dir} holds no checkpoint.pt")
    elif existing and not overwrite:
        # without a checkpoint there is nothing to resume: say so rather than suggest --resume
        what = ("pass --resume to continue it, --overwrite to replace it" if "checkpoint.pt" in existing else
                "it saved no checkpoint, so there is nothing to resume: pass --overwrite to replace it")
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(existing)}); {what}, or choose another --out")
    try:  # a file in the way, a read-only folder or a full disk must fail now, not after an hour of training
        prepare_output_dir(run_dir, what="run folder")
    except OutputError as e:
        raise RunDirError(str(e)) from None
    try:
        if overwrite and not resume:
            for name in existing:
                (run_dir / name).unlink()
        for name in RUN_FILES:   # this run is the folder's only writer from here on
            remove_stale_temporaries(run_dir / name)
    except OSError as e:
        raise RunDirError(f"cannot write to run folder {run_dir}: {e.strerror or e}") from None
    return run_dir


def remove_unsaved_run(run_dir: Path, created: bool) -> None:
    """Remove what a new run wrote before its first checkpoint was saved (``config.json``, empty
    metrics), and the folder itself if the run ``created`` it and it is now empty, so that the same
    command can run again.  Never touches a folder holding a checkpoint."""
    if (run_dir / "checkpoint.pt").exists():
        return
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
        remove_stale_temporaries(run_dir / name)
    if created:
        try:
            run_dir.rmdir()
        except OSError:   # not empty: the user's files stay
            pass


def versions() -> dict[str, str]:
    """Python, library and package versions, recorded in ``config.json``."""
    import numpy
    import pyro
    import torch

    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
            "numpy": numpy.__version__, "pyro_dcim": __version__, "platform": platform.platform(),
            "cuda": str(torch.version.cuda)}


def _clean(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: os.PathLike | str, data: dict[str, Any]) -> None:
    _atomic_write_text(Path(path), json.dumps({k: _clean(v) for k, v in data.items()}, indent=2) + "\n")


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """``config.json``: ``{"config": ..., "versions": ..., "command": ...}``; rerun with ``--config``."""
    write_json(run_dir / CONFIG_NAME, {"config": config, "versions": versions(), "command": sys.argv})


def read_config(path: os.PathLike | str) -> dict[str, Any]:
    """The training settings in a ``config.json`` (a run folder is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise RunDirError(f"cannot read config {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} does not hold a JSON object")
    return data.get("config", data)


def _csv_row(row: dict[str, Any]) -> list[str]:
    return ["" if _clean(row.get(k)) is None else repr(row[k]) if isinstance(row[k], float) else str(row[k])
            for k in METRIC_COLUMNS]


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n" for row in rows)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` from the whole history (used on resume,
    so the files agree with the checkpoint whatever happened after its save)."""
    _atomic_write_text(run_dir / METRICS_JSONL, _jsonl(history))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(METRIC_COLUMNS)
    writer.writerows(_csv_row(row) for row in history)
    _atomic_write_text(run_dir / METRICS_CSV, buf.getvalue())


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to both metrics files (creating them with a header)."""
    jsonl, csv_path = run_dir / METRICS_JSONL, run_dir / METRICS_CSV
    with open(jsonl, "a") as f:
        f.write(_jsonl([row]))
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(METRIC_COLUMNS)
        writer.writerow(_csv_row(row))
