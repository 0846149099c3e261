"""The data a run trains on: the splits, on the device, which training labels it keeps, and the
order of each epoch's batches.

Each epoch visits the training images in an order that is a pure function of ``(seed, epoch)``
(and of the labelled set, itself a pure function of the seed), so the data order needs no state
to resume and every rank of a distributed run can compute it; each rank takes its share with
:func:`shard_indices`.  With ``--labels N`` the images outside the labelled set keep their true
labels in ``Splits.train_y`` (for the training accuracy only); the loop hands the objective
``UNLABELLED`` in their place (:func:`observed_labels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..data import load_dataset
from ..semi_supervised import UNLABELLED
from .config import ConfigError, TrainConfig

__all__ = ["Splits", "load_splits", "default_val_size", "epoch_permutation", "epoch_order", "shard_indices",
           "random_shift", "select_labels", "observed_labels"]

#: the seed stream of the label selection: past every epoch's stream (``seed * 1_000_003 + epoch``)
_LABEL_STREAM = 1_000_002


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in ``epoch``: a pure function of ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def select_labels(y: torch.Tensor, n: int, seed: int, num_classes: Optional[int] = None) -> torch.Tensor:
    """The sorted indices of the ``n`` training images whose labels a run keeps.

    Balanced per class: ``n // C`` images of every class, and one more for ``n % C`` classes drawn by
    the seed; within a class, the images are drawn by the seed too.  A pure function of
    ``(y, n, seed)``: every rank, and a resumed run, keeps the same labels."""
    y = y.cpu()
    classes = int(y.max()) + 1 if num_classes is None else num_classes
    if n == 0:  # unsupervised
        return torch.zeros(0, dtype=torch.long)
    if n < classes:
        raise ConfigError(f"--labels {n} cannot give each of the {classes} classes a label; give at least "
                          f"{classes}, or 0 for unsupervised learning")
    g = torch.Generator().manual_seed(seed * 1_000_003 + _LABEL_STREAM)
    counts = torch.full((classes,), n // classes, dtype=torch.long)
    counts[torch.randperm(classes, generator=g)[:n % classes]] += 1
    chosen = []
    for c in range(classes):
        members = (y == c).nonzero().squeeze(1)
        if len(members) < counts[c]:
            raise ConfigError(f"--labels {n} needs {int(counts[c])} images of class {c}, but the training split "
                              f"has {len(members)}")
        chosen.append(members[torch.randperm(len(members), generator=g)[:counts[c]]])
    return torch.cat(chosen).sort().values


def epoch_order(n: int, seed: int, epoch: int, labelled: Optional[torch.Tensor] = None,
                share: Optional[float] = None, batch_size: int = 1) -> torch.Tensor:
    """The training images of ``epoch`` in the order their batches take them (before sharding).

    Without ``share`` (or when the labelled images already fill that share of a batch on their own)
    this is :func:`epoch_permutation`: every image once.  Otherwise every ``batch_size`` block holds
    ``round(share * batch_size)`` labelled images, drawn in passes of seeded permutations of
    ``labelled`` (a boolean mask over the ``n`` images), and the rest of the block the unlabelled
    images in the epoch permutation's order, each once: an epoch is one pass over the unlabelled
    images.  ``batch_size`` is the images of one step over all ranks: each rank's strided shard of a
    block holds its part of the block's labelled images, and N ranks of B images equal one process
    of N x B."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    if labelled is None or share is None:
        return perm
    per_batch = round(share * batch_size)
    n_labelled = int(labelled.sum())
    if n_labelled == 0:  # --labels 0: every image is unlabelled
        return perm
    if per_batch * n <= n_labelled * batch_size or per_batch >= batch_size:  # already that share, or no room
        return perm
    unlabelled = perm[~labelled.cpu()[perm]]
    rest = batch_size - per_batch
    blocks = math.ceil(len(unlabelled) / rest)
    pool = labelled.cpu().nonzero().squeeze(1)
    passes = math.ceil(blocks * per_batch / len(pool))
    drawn = pool[torch.cat([torch.randperm(len(pool), generator=g) for _ in range(passes)])[:blocks * per_batch]]
    return torch.cat([torch.cat([drawn[b * per_batch:(b + 1) * per_batch], unlabelled[b * rest:(b + 1) * rest]])
                      for b in range(blocks)])


def observed_labels(y: torch.Tensor, labelled: Optional[torch.Tensor]) -> torch.Tensor:
    """The labels the objective sees: ``y`` where ``labelled`` (a mask of the same length), else ``UNLABELLED``."""
    return y if labelled is None else torch.where(labelled, y, torch.full_like(y, UNLABELLED))


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
    #: with ``--labels N``: which training images keep their labels (a boolean mask); ``None``: all
    labelled: Optional[torch.Tensor] = None


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
    labelled = None
    if cfg.labels is not None:
        if cfg.labels > n_train:
            raise ConfigError(f"--labels {cfg.labels} is more than the {n_train} training images; use --labels all")
        labelled = torch.zeros(n_train, dtype=torch.bool)
        labelled[select_labels(y[:n_train], cfg.labels, cfg.seed, int(y.max()) + 1)] = True
        labelled = labelled.to(device)
    return Splits(x[:n_train].to(device), y[:n_train].to(device), x[-n_val:].to(device), y[-n_val:].to(device),
                  test_x.to(device), test_y.to(device), labelled)


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
