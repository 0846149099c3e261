"""What a run measures, as named records: the means of one pass (:class:`Measures`), their running
sums on the device (:class:`Tally`) and one epoch's row of ``metrics.csv`` (:class:`EpochRow`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ..objectives import ObjectiveParts

__all__ = ["Measures", "TrainMeasures", "Tally", "EpochRow", "METRIC_COLUMNS", "cluster_accuracy"]


@dataclass(frozen=True)
class Measures:
    """Means over the images of one pass: forward accuracy and the objective's parts (nats, see
    :class:`~pyro_dcim.objectives.ObjectiveParts`)."""

    acc: float
    forward_nll: float
    reverse_nll_per_pixel: float
    reverse_nll_sum: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class TrainMeasures(Measures):
    """The training pass's means, with the loss that was minimised."""

    loss: float


def _batch_means(parts: ObjectiveParts, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"acc": (parts.logits.argmax(1) == y).double().mean(), "forward_nll": parts.forward_nll.double(),
            "reverse_nll_per_pixel": parts.reverse_nll_per_pixel.double(),
            "reverse_nll_sum": parts.reverse_nll_sum.double(), "loss": parts.total.detach().double()}


class Tally:
    """Running sums of ``record``'s fields over images, kept on the device: no host sync per step.

    ``sums[0]`` counts images and ``sums[1:]`` follow the record's fields, the layout a checkpoint stores.
    """

    def __init__(self, record: type[Measures], device: torch.device, sums: torch.Tensor | None = None) -> None:
        self.record = record
        self.names = [f.name for f in fields(record)]
        self.sums = (torch.zeros(1 + len(self.names), dtype=torch.float64) if sums is None else sums).to(device)

    def add(self, parts: ObjectiveParts, y: torch.Tensor) -> None:
        means = _batch_means(parts, y)
        one = torch.ones((), dtype=torch.float64, device=self.sums.device)
        self.sums += len(y) * torch.stack([one, *(means[name] for name in self.names)])

    def means(self) -> Measures:
        return self.record(*(self.sums[1:] / self.sums[0]).tolist())


@dataclass(frozen=True)
class EpochRow:
    """One epoch in ``metrics.jsonl`` / ``metrics.csv``: the training means (``train_acc`` and the
    unprefixed parts), the validation means (``val_*``), the learning rate at the epoch's last
    step and the seconds it took."""

    epoch: int
    train_acc: float
    val_acc: float
    forward_nll: float
    val_forward_nll: float
    reverse_nll_per_pixel: float
    val_reverse_nll_per_pixel: float
    reverse_nll_sum: float
    val_reverse_nll_sum: float
    loss: float
    lr: float
    seconds: float

    @classmethod
    def of(cls, epoch: int, train: TrainMeasures, val: Measures, lr: float, seconds: float) -> "EpochRow":
        return cls(epoch, train.acc, val.acc, train.forward_nll, val.forward_nll, train.reverse_nll_per_pixel,
                   val.reverse_nll_per_pixel, train.reverse_nll_sum, val.reverse_nll_sum, train.loss, lr, seconds)

    def line(self, epochs: int) -> str:
        """The log line of the epoch; a discriminative run's training pass has no reverse loss."""
        train_rev = "" if math.isnan(self.reverse_nll_per_pixel) else f" rev/px {self.reverse_nll_per_pixel:.4f}"
        return (f"epoch {self.epoch:>3}/{epochs}  train acc {self.train_acc:.4f} fwd {self.forward_nll:.4f}"
                f"{train_rev} | val acc {self.val_acc:.4f} fwd {self.val_forward_nll:.4f} "
                f"rev/px {self.val_reverse_nll_per_pixel:.4f} | {self.seconds:.1f} s")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the columns of ``metrics.csv``, in order; ``metrics.jsonl`` holds the same keys
METRIC_COLUMNS = tuple(f.name for f in fields(EpochRow))


def cluster_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of unsupervised components against the labels after the best one-to-one map of components
    to classes (Hungarian, on the contingency table); components left without a class count as errors."""
    from scipy.optimize import linear_sum_assignment

    predicted, labels = predicted.cpu().long(), labels.cpu().long()
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and labels {tuple(labels.shape)} differ in shape")
    if not len(labels):
        return math.nan
    rows, cols = int(predicted.max()) + 1, int(labels.max()) + 1
    table = torch.zeros(rows, cols, dtype=torch.long)
    table.index_put_((predicted, labels), torch.ones_like(labels), accumulate=True)
    r, c = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table[r, c].sum()) / len(labels)
