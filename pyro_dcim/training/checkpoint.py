"""Checkpoints: written atomically, and loadable into a rebuilt model with one call.

    net = pyro_dcim.load_model("runs/dense-21")          # a run folder or a .pt file

A checkpoint is a ``torch.save`` dict with ``"model"`` (:func:`model_state`: spec,
input shape, units, state dict, library version) and whatever the trainer adds
(optimiser, RNG states, epoch), all plain data: it is loaded with ``weights_only=True``
(:func:`pyro_dcim.safe_load.safe_load`), so opening someone else's run runs none of its code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from ..model import DCIM
from ..safe_load import CheckpointError, safe_load
from .atomic import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "model_state",
           "model_from_state", "load_parameters", "Architecture", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
PathLike = Union[str, os.PathLike]


def _version() -> str:
    from .. import __version__

    return __version__


def model_state(net: DCIM) -> dict[str, Any]:
    """Everything needed to rebuild ``net``: its spec, input shape, units, tying, ``p(x^n)`` and parameters."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {"spec": net.spec, "input_shape": list(net.input_shape), "units": net.units.name,
            "state_dict": state, "version": _version(), "tied": net.tied, "class_prior": net.class_prior}


@dataclass(frozen=True)
class Architecture:
    """What a model state says the net is, without building it: compare it with :meth:`of` a net."""

    spec: list
    input_shape: tuple[int, ...]
    units: str
    tied: bool
    class_prior: str = "uniform"

    @classmethod
    def of(cls, net: DCIM) -> "Architecture":
        return cls(list(net.spec), tuple(net.input_shape), net.units.name, net.tied, net.class_prior)

    @classmethod
    def stored(cls, state: dict[str, Any]) -> "Architecture":
        """The architecture in :func:`model_state`'s dict (JSON-like lists read back as tuples)."""
        try:
            spec = [tuple(layer) if isinstance(layer, list) else layer for layer in state["spec"]]
            # states written before the learned p(x^n) have a uniform one
            return cls(spec, tuple(state["input_shape"]), state["units"], state.get("tied", True),
                       state.get("class_prior", "uniform"))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"not a pyro_dcim model state (missing {e})") from None


def load_parameters(net: DCIM, state: dict[str, Any]) -> DCIM:
    """Copy :func:`model_state`'s parameters into ``net``, which must have the stored architecture."""
    saved = str(state.get("version", "?"))
    if saved.split(".")[:2] != _version().split(".")[:2]:
        raise CheckpointError(f"checkpoint written by pyro_dcim {saved}, this is {_version()}; "
                              f"load it with pyro_dcim {saved} or retrain")
    try:
        net.load_state_dict(state["state_dict"])
    except KeyError as e:
        raise CheckpointError(f"not a pyro_dcim model state (missing {e})") from None
    except RuntimeError as e:
        raise CheckpointError(f"the stored parameters do not fit the stored spec: {e}") from None
    return net


def model_from_state(state: dict[str, Any], map_location: Union[str, torch.device] = "cpu") -> DCIM:
    """Rebuild a :class:`DCIM` from :func:`model_state`'s dict."""
    arch = Architecture.stored(state)
    try:
        net = DCIM.from_spec(arch.spec, input_shape=arch.input_shape, units=arch.units, tied=arch.tied,
                             class_prior=arch.class_prior)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"not a pyro_dcim model state ({e})") from None
    return load_parameters(net, state).to(map_location)


def save_checkpoint(path: PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: temporary file, flush, fsync, rename.

    A crash at any moment leaves either the previous checkpoint or the new one.
    """
    return atomic_write(path, lambda f: torch.save(checkpoint, f))


def _resolve(path: PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; give a run folder holding {CHECKPOINT_NAME} or a .pt file")
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """The checkpoint dict stored at ``path`` (a run folder or a file), read as plain data only
    (a file that needs other Python objects raises :class:`~pyro_dcim.safe_load.UnsafeFileError`)."""
    path = _resolve(path)
    checkpoint = safe_load(path, map_location)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: not a pyro_dcim checkpoint")
    return checkpoint


def load_model(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> DCIM:
    """Rebuild the trained :class:`DCIM` stored in a run folder or checkpoint file."""
    return model_from_state(load_checkpoint(path, map_location)["model"], map_location)
