"""The data a run trains on: the splits, on the device, and the order of each epoch's batches.

Each epoch visits the training images in the order of a permutation that is a pure function of
``(seed, epoch)``, so the data order needs no state to resume and every rank of a distributed
run can compute it; each rank takes its share with :func:`shard_indices`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import load_dataset
from .config import ConfigError, TrainConfig

__all__ = ["Splits", "load_splits", "default_val_size", "epoch_permutation", "shard_indices", "random_shift"]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in ``epoch``: a pure function of ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def shard_indices(perm: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``perm``: every ``world_size``-th index, equal lengths for all ranks."""
    usable = len(perm) - len(perm) % world_size
    return perm[rank:usable:world_size]


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def default_val_size(n_train: int) -> int:
    """The last 10,000 training images of the 60,000-image sets; the last fifth of smaller ones
    (2,000 of the bundled subset's 10,000)."""
    return 10_000 if n_train >= 60_000 else n_train // 5


def load_splits(cfg: TrainConfig, device: torch.device) -> Splits:
    """Train / validation / test tensors on ``device``; validation = the *last* ``val_size`` training images."""
    mode = "none" if cfg.binarize == "dynamic" else cfg.binarize  # dynamic: drawn per step in the loop
    kwargs = dict(data_dir=cfg.data_dir, download=cfg.download, binarize_mode=mode, seed=cfg.seed)
    x, y = load_dataset(cfg.dataset, "train", **kwargs)
    test_x, test_y = load_dataset(cfg.dataset, "test", **kwargs)
    n_val = default_val_size(len(x)) if cfg.val_size is None else cfg.val_size
    if n_val >= len(x):
        raise ConfigError(f"val size {n_val} leaves no training images out of {len(x)}")
    n_train = len(x) - n_val if cfg.train_size is None else min(cfg.train_size, len(x) - n_val)
    return Splits(x[:n_train].to(device), y[:n_train].to(device), x[-n_val:].to(device), y[-n_val:].to(device),
                  test_x.to(device), test_y.to(device))


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by its own random offset of up to ``max_shift`` pixels (zero fill).

    A data augmentation, not part of the paper (which used no regulariser): on the 8,000
    training digits of the bundled subset it is worth about two points of validation accuracy.
    Shifts of ±2 pixels gained as much accuracy but blurred the generated class means."""
    if images.dim() != 4:
        raise ConfigError(f"--augment shift needs images (N, C, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), device=images.device, generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # (n, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
