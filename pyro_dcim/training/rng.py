"""Seeding, and the RNG states a checkpoint stores so that a resumed run draws what the uninterrupted one would.

Every state is plain data (tensors, tuples, numbers), so checkpoints load with ``weights_only=True``:
numpy's state is stored with its key as an int64 tensor instead of a numpy array.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "seed_everything", "plain_numpy_state"]


def plain_numpy_state(state: tuple) -> tuple:
    """``np.random.get_state()`` with its uint32 key array as an int64 tensor (exact: every key < 2**32);
    also converts the array-holding states of checkpoints written before this format."""
    name, key, *rest = state
    if isinstance(key, np.ndarray):
        key = torch.from_numpy(key.astype(np.int64))
    return (str(name), key, *(x.item() if isinstance(x, np.generic) else x for x in rest))


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": plain_numpy_state(np.random.get_state()),
             "python": random.getstate(), "sampling": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, key, *rest = state["numpy"]
    key = key.cpu().numpy() if isinstance(key, torch.Tensor) else key  # map_location may have moved it
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    generator.set_state(state["sampling"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
