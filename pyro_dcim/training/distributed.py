"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N -m pyro_dcim.fit ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init` joins the process group (NCCL on GPUs, gloo on CPU) and
picks this rank's device.  The training loop shards each epoch's permutation by
stride (:func:`pyro_dcim.training.batches.shard_indices`), so the ranks' batches of one step
together are exactly one process's batch of ``N × batch_size`` images, and
DistributedDataParallel's gradient average equals that process's gradient.  Only
rank 0 writes files.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..model import DCIM
from ..objectives import ObjectiveParts

__all__ = ["rank_world", "init", "cleanup", "all_reduce_sum", "ObjectiveModule", "wrap"]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` as torchrun sets them; ``(0, 1)`` for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device: ``cuda:LOCAL_RANK`` on GPUs."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        rank, world = rank_world()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op outside a process group)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class ObjectiveModule(nn.Module):
    """An objective as a module, ``forward(x0, y) -> ObjectiveParts``.

    DistributedDataParallel synchronises gradients through its wrapped module's
    ``forward``, so the whole loss (both mean-field passes) must run inside one.
    """

    def __init__(self, net: DCIM, objective: Callable[..., ObjectiveParts], **settings: object) -> None:
        super().__init__()
        self.net = net
        self.objective = objective
        self.settings = settings

    def forward(self, x0: torch.Tensor, y: torch.Tensor) -> ObjectiveParts:
        return self.objective(self.net, x0, y, **self.settings)


def wrap(module: ObjectiveModule, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """DDP around ``module`` in a distributed run, the module itself otherwise.

    ``find_unused_parameters``: the discriminative objective never touches ``b^0``.
    """
    if not dist.is_initialized():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)
