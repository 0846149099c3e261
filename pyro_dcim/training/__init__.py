"""Training a DCIM: the settings, the loop and everything a run folder holds.

* :mod:`.config` — :class:`TrainConfig`, each setting declared once (help, choices, bounds);
* :mod:`.loop` — :func:`train`: set up, resume, step, end of epoch, around one loop;
* :mod:`.evaluation` — the net a config builds, the objective it calls, a pass over a split;
  :mod:`.schedule` — the learning rate and the reverse weight over a run;
* :mod:`.batches` — the splits and each epoch's data order; :mod:`.metrics` — named records;
* :mod:`.checkpoint`, :mod:`.runs`, :mod:`.atomic` — checkpoints, the run folder, atomic writes;
* :mod:`.rng`, :mod:`.signals`, :mod:`.distributed` — seeding and RNG state, clean stops, DDP.

The names below load on first use, so that reading a checkpoint (``pyro_dcim.load_model``, the
``draw`` command) does not import the loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "TrainConfig": ".config", "ConfigError": ".config", "resolve_device": ".config",
    "train": ".loop", "TrainResult": ".loop", "NonFiniteLossError": ".loop", "evaluate": ".evaluation",
    "build_model": ".evaluation",
    "TrainingInterrupted": ".signals", "Measures": ".metrics", "EpochRow": ".metrics",
    "Splits": ".batches", "load_splits": ".batches", "epoch_permutation": ".batches", "shard_indices": ".batches",
    "CheckpointError": ".checkpoint", "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint",
    "load_model": ".checkpoint", "RunDirError": ".runs", "read_config": ".runs",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .batches import Splits, epoch_permutation, load_splits, shard_indices  # noqa: F401
    from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint  # noqa: F401
    from .config import ConfigError, TrainConfig, resolve_device  # noqa: F401
    from .evaluation import build_model, evaluate  # noqa: F401
    from .loop import NonFiniteLossError, TrainResult, train  # noqa: F401
    from .metrics import EpochRow, Measures  # noqa: F401
    from .runs import RunDirError, read_config  # noqa: F401
    from .signals import TrainingInterrupted  # noqa: F401
