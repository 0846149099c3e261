"""Figures of the paper: learning curves (Fig. 1) and generated digits (Fig. 2, Fig. 3).

Figures are drawn on :class:`matplotlib.figure.Figure` objects and saved as PNG files, without
pyplot, so they run headless and leave the user's matplotlib backend as it was.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from .generate import class_grid, generate, images_per_class, predict
from .model import DCIM

__all__ = ["plot_learning_curves", "plot_sample_grid", "sample_figure", "run_figures", "SAMPLE_TITLES"]

SAMPLE_TITLES = {
    "mean": "reverse mean field from the class (Fig. 2)",
    "sample-layer": "x^{n-1} sampled from the class, then mean field to the image (Fig. 3)",
    "ancestral": "ancestral samples of the reverse Pyro model",
}

_PANELS = [("accuracy", "train_acc", "val_acc"),
           ("forward NLL  -log p(x^n|x^0)", "forward_nll", "val_forward_nll"),
           ("reverse loss per pixel (BCE)", "reverse_nll_per_pixel", "val_reverse_nll_per_pixel")]


def plot_learning_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                         title: str = "") -> Path:
    """Fig. 1: training (dashed) and validation (solid) accuracy, forward NLL and reverse loss
    per epoch, one colour per run (``histories``: label -> metrics rows)."""
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for colour, (label, rows) in zip(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"], histories.items()):
        epochs = [r["epoch"] for r in rows]
        for ax, (name, train_key, val_key) in zip(axes, _PANELS):
            for key, style, suffix in ((train_key, "--", "train"), (val_key, "-", "val")):
                values = [math.nan if r.get(key) is None else float(r[key]) for r in rows]
                if not all(math.isnan(v) for v in values):
                    # markers, so a run of one epoch still shows its point
                    ax.plot(epochs, values, style, marker="o", markersize=3, color=colour, label=f"{label} {suffix}")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("epoch")
    for ax in (axes[0], axes[2]):
        if ax.get_legend_handles_labels()[0]:       # nothing to label when no epoch ran
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _as_2d(images: torch.Tensor) -> np.ndarray:
    pics = images.detach().float().cpu()
    if pics.dim() == 4 and pics.shape[1] == 1:
        return pics[:, 0].numpy()
    flat = pics.flatten(1)
    side = math.isqrt(flat.shape[1])
    if side * side != flat.shape[1]:
        raise ValueError(f"cannot draw images of shape {tuple(images.shape[1:])} as squares")
    return flat.reshape(-1, side, side).numpy()


def plot_sample_grid(images: torch.Tensor, classes: torch.Tensor, pred: torch.Tensor, prob: torch.Tensor,
                     path: str | Path, title: str = "", per_row: int | None = None) -> Path:
    """A grid with one row per intended class (one row in all when each class has one image),
    each image titled with the forward model's predicted class and its probability (red where
    it is not the intended class), as Fig. 2.  The intended class labels each row ("class c" at
    its left), or each image of a single row (below it).

    Drawn as one mosaic image with text on top (a hundred separate axes are slow to draw)."""
    pics = _as_2d(images)
    classes, pred, prob = classes.cpu(), pred.cpu(), prob.cpu()
    per_row = per_row or int((classes == classes[0]).sum())
    one_row = per_row == 1   # one image per class: the classes run along a single row
    per_row = len(pics) if one_row else per_row
    rows, (h, w) = math.ceil(len(pics) / per_row), pics.shape[1:]
    gap, top = 2, 9  # pixels between images, and above each one for its title
    left, below = (0, 8) if one_row else (22, 0)   # room for the intended class: under each image, or per row
    mosaic = np.ones((rows * (h + top + gap) + below, left + per_row * (w + gap)))
    for i, pic in enumerate(pics):
        r, c = divmod(i, per_row)
        y0, x0 = r * (h + top + gap) + top, left + c * (w + gap)
        mosaic[y0:y0 + h, x0:x0 + w] = pic
    scale = 0.032  # inches per mosaic pixel
    fig = Figure(figsize=(mosaic.shape[1] * scale, mosaic.shape[0] * scale + (0.3 if title else 0)))
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] * scale / fig.get_figheight()))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for i in range(len(pics)):
        r, c = divmod(i, per_row)
        ok = int(pred[i]) == int(classes[i])
        ax.text(left + c * (w + gap) + w / 2, r * (h + top + gap) + top - 1.5, f"{int(pred[i])} ({float(prob[i]):.2f})",
                ha="center", va="bottom", fontsize=6, color="black" if ok else "red")
        if one_row:
            ax.text(c * (w + gap) + w / 2, top + h + 1, f"class {int(classes[i])}", ha="center", va="top", fontsize=6)
    if not one_row:
        for r in range(rows):
            ax.text(left - 3, r * (h + top + gap) + top + h / 2, f"class {int(classes[r * per_row])}", ha="right",
                    va="center", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=7, y=1 - 0.08 / fig.get_figheight())
    return _save(fig, path)


def sample_figure(net: DCIM, path: str | Path, mode: str = "mean", per_class: int = 10, seed: int = 0,
                  title: str = "") -> Path:
    """Generate ``per_class`` images of every class in ``mode`` (one in the deterministic mean mode)
    and draw them with their predictions."""
    classes = class_grid(net.num_classes, images_per_class(mode, per_class), net.input_bias.device)
    images = generate(net, classes, mode, seed=seed)
    pred, prob = predict(net, images)
    return plot_sample_grid(images, classes, pred, prob, path, title or SAMPLE_TITLES[mode])


def run_figures(net: DCIM, cfg: Any, history: Sequence[Mapping[str, Any]], run_dir: Path, seed: int = 0
                ) -> list[Path]:
    """The figures of a run folder: ``learning_curves.png`` (Fig. 1), ``samples_mean.png``
    (Fig. 2) and, for nets with a hidden layer, ``samples_sample-layer.png`` (Fig. 3)."""
    label = f"{cfg.arch} {cfg.objective}"
    paths = [plot_learning_curves({label: history}, run_dir / "learning_curves.png", title=label)]
    modes = ["mean"] + (["sample-layer"] if net.num_layers > 1 else [])
    for mode in modes:
        paths.append(sample_figure(net, run_dir / f"samples_{mode}.png", mode, seed=seed,
                                   title=f"{label}: {SAMPLE_TITLES[mode]}"))
    return paths


def _save(fig: Figure, path: str | Path) -> Path:
    from .training.atomic import atomic_write

    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"   # as savefig(path) reads it from the name
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=80))   # never a half-written figure
    return path
