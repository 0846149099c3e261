"""A short digest of tensors' bytes: which net (and data) a long-running result belongs to.

Training is seeded but not reproducible bit for bit across library versions (a changed order of
random draws gives another net), so a result kept across sessions, such as an AIS checkpoint or a
record of per-digit likelihoods, names the exact parameters it was computed with.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import torch

__all__ = ["tensor_digest", "net_fingerprint"]


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-1 of the tensors' raw bytes in order (any dtype or device), as 40 hex digits."""
    digest = hashlib.sha1()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def net_fingerprint(net: torch.nn.Module) -> str:
    """:func:`tensor_digest` of a module's parameters: equal for bitwise-equal nets, else (almost surely) not."""
    return tensor_digest(net.parameters())
