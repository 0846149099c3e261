"""What a run measures on its evaluation splits, and the objective it calls: the net a config builds
(:func:`build_model`), the objective with exactly its settings (:func:`objective_call`), and the means of one
pass over a split (:func:`evaluate`; a cluster accuracy for an unsupervised run)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ..model import DCIM
from ..objectives import get_objective, objective_settings
from ..spec import parse_spec
from ..validation import UNLABELLED
from .config import TrainConfig
from .metrics import Measures, Tally, cluster_accuracy

__all__ = ["build_model", "objective_call", "evaluate"]


def build_model(cfg: TrainConfig, input_shape: tuple[int, ...]) -> DCIM:
    """The DCIM of ``cfg.arch`` (a paper network's name or a spec); a bad spec raises SpecError."""
    spec = cfg.arch
    if cfg.classes is not None:  # --labels 0: a mixture of C components in place of the dataset's classes
        spec = [layer.as_notation() for layer in parse_spec(cfg.arch)[:-1]] + [cfg.classes]
    return DCIM.from_spec(spec, input_shape=input_shape, units=cfg.units, class_prior=cfg.class_prior)


def objective_call(cfg: TrainConfig, generator: torch.Generator, report_reverse: bool,
                   partial_labels: bool = True) -> tuple[Callable, dict]:
    """The objective of ``cfg`` and exactly the settings it takes (config names mapped to its own).
    ``partial_labels=False``: every row is labelled (validation, test), whatever ``--labels`` says."""
    objective = get_objective(cfg.objective)
    pool = dict(reverse_weight=cfg.reverse_weight, reduction=cfg.reverse_reduction, layer=cfg.sample_layer,
                code_weight=cfg.code_weight, generator=generator, report_reverse=report_reverse,
                approximation=cfg.approximation, particles=cfg.particles, wake_phi_weight=cfg.wake_phi_weight,
                sleep_weight=cfg.sleep_weight, unlabelled_class_weight=cfg.unlabelled_class_weight,
                unlabelled_class_threshold=cfg.unlabelled_class_threshold,
                # --labels N: rows labelled UNLABELLED have a latent class (all rows keep the old path otherwise)
                unlabelled=None if cfg.labels is None or not partial_labels else cfg.unlabelled_class)
    return objective, objective_settings(objective, pool)


@torch.no_grad()
def evaluate(net: DCIM, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor) -> Measures:
    """Accuracy of the forward model, ``-log p(x^n|x^0)`` and the objective's reverse term
    (from the class for (21) and the discriminative net, from a sampled layer for (22),
    with a fixed seed so that evaluation is repeatable), as means over ``x``."""
    was_training = net.training
    net.eval()
    generator = torch.Generator(device=x.device).manual_seed(cfg.seed + 7919)
    unsupervised = cfg.labels == 0  # the class is latent here too, and the accuracy a cluster accuracy
    objective, settings = objective_call(cfg, generator, report_reverse=True, partial_labels=unsupervised)
    tally = Tally(Measures, x.device)
    predicted = []
    for i in range(0, len(x), cfg.eval_batch_size):
        xb, yb = x[i:i + cfg.eval_batch_size], y[i:i + cfg.eval_batch_size]
        parts = objective(net, xb, torch.full_like(yb, UNLABELLED) if unsupervised else yb, **settings)
        tally.add(parts, yb)
        predicted.append(parts.logits.argmax(-1))
    net.train(was_training)
    means = tally.means()
    if unsupervised:
        means = dataclasses.replace(means, acc=cluster_accuracy(torch.cat(predicted), y))
    return means
