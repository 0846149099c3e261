"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N -m pyro_dcim.fit ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on GPUs, gloo on CPU).
Every rank draws the same global batch order and takes its own equal slice of each
global batch (:meth:`Context.shard`), so DistributedDataParallel's gradient average
equals the gradient of one process on the whole batch.  Only the main rank writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from .model import DCIM
from .objectives import ObjectiveParts

__all__ = ["Context", "setup", "cleanup", "ObjectiveModule"]


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_indices: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (equal sizes: the global batch is cut to a multiple)."""
        if not self.distributed:
            return batch_indices
        per_rank = len(batch_indices) // self.world_size
        return batch_indices[self.rank * per_rank:(self.rank + 1) * per_rank]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: str = "auto") -> Context:
    """Join the process group if launched by ``torchrun``; pick this rank's device.

    ``device``: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def wrap(module: ObjectiveModule, ctx: Context, find_unused_parameters: Optional[bool] = None) -> nn.Module:
    """DDP around ``module`` when distributed (unused parameters allowed: the discriminative
    objective never touches ``b^0``), the module itself otherwise."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids,
                                   find_unused_parameters=True if find_unused_parameters is None
                                   else find_unused_parameters)
