"""The training loop: discriminative, bidirectional (21) and sampled-layer (22), read top to bottom.

    from pyro_dcim.train import TrainConfig, train
    result = train(TrainConfig(arch="dense", objective="bidirectional", epochs=15, out="runs/dense-21"))

The data live on the device as tensors; each epoch visits them in the order of a
permutation that is a pure function of ``(seed, epoch)``, so the data order needs no
state to resume and every rank of a distributed run can compute it (each takes its
share with :func:`shard_indices`; all writes are guarded by ``is_main``).  A checkpoint is
written atomically after every epoch (and on SIGINT/SIGTERM, mid-epoch) with the
model, optimiser, RNG states, the position ``(epoch, step)`` and the metrics so far,
so that a resumed run reproduces an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from . import distributed, runs
from .checkpoint import CheckpointError, load_checkpoint, model_from_state, model_state, save_checkpoint
from .config import OPTIMIZERS, ConfigError, TrainConfig, resolve_device
from .data import load_dataset
from .faults import StopSignals, TrainingInterrupted, rng_state, seed_everything, set_rng_state
from .init import init_input_bias, initialise
from .model import DCIM
from .objectives import get_objective, sampled_layer
from .spec import SpecError
from .validation import check_images

__all__ = ["TrainConfig", "TrainResult", "ConfigError", "NonFiniteLossError", "TrainingInterrupted", "train",
           "evaluate", "resolve_device", "epoch_permutation", "shard_indices", "load_splits", "build_model"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the step's update."""


@dataclass
class TrainResult:
    run_dir: Path
    net: DCIM
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


# -- data order and the distributed seam ---------------------------------------------
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in ``epoch``: a pure function of ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def shard_indices(perm: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``perm``: every ``world_size``-th index, equal lengths for all ranks."""
    usable = len(perm) - len(perm) % world_size
    return perm[rank:usable:world_size]


# -- data and model ---------------------------------------------------------------------------
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


def build_model(cfg: TrainConfig, input_shape: tuple[int, ...]) -> DCIM:
    """The DCIM of ``cfg.arch`` (a paper network's name or a spec); a bad spec raises SpecError."""
    return DCIM.from_spec(cfg.arch, input_shape=input_shape, units=cfg.units)


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


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1) of the run: constant, or cosine decay to 0."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr


def objective_kwargs(cfg: TrainConfig, generator: torch.Generator, report_reverse: bool) -> dict[str, Any]:
    return dict(reverse_weight=cfg.reverse_weight, reduction=cfg.reverse_reduction, layer=cfg.sample_layer,
                code_weight=cfg.code_weight, generator=generator, report_reverse=report_reverse,
                approximation=cfg.approximation, particles=cfg.particles, wake_phi_weight=cfg.wake_phi_weight,
                sleep_weight=cfg.sleep_weight)


# -- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(net: DCIM, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy of the forward model, ``-log p(x^n|x^0)`` and the objective's reverse term
    (from the class for (21) and the discriminative net, from a sampled layer for (22),
    with a fixed seed so that evaluation is repeatable), as means over ``x``."""
    was_training = net.training
    net.eval()
    objective = get_objective(cfg.objective)
    generator = torch.Generator(device=x.device).manual_seed(cfg.seed + 7919)
    sums = torch.zeros(4, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), cfg.eval_batch_size):
        xb, yb = x[i:i + cfg.eval_batch_size], y[i:i + cfg.eval_batch_size]
        parts = objective(net, xb, yb, **objective_kwargs(cfg, generator, report_reverse=True))
        sums += len(xb) * torch.stack([(parts.logits.argmax(1) == yb).double().mean(), parts.forward_nll.double(),
                                       parts.reverse_nll_per_pixel.double(), parts.reverse_nll_sum.double()])
    net.train(was_training)
    acc, fwd, rev_px, rev_sum = (sums / len(x)).tolist()
    return {"acc": acc, "forward_nll": fwd, "reverse_nll_per_pixel": rev_px, "reverse_nll_sum": rev_sum}


# -- the loop ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, log=print) -> TrainResult:
    """Train a DCIM as ``cfg`` says, writing the run folder ``cfg.out``.

    ``resume=True`` continues the run in ``cfg.out`` from its checkpoint.  Raises
    ConfigError / DataError / SpecError / RunDirError / CheckpointError on bad input
    (before anything is trained), :class:`NonFiniteLossError` and :class:`TrainingInterrupted`.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.threads:
        # intra-op threads spin-wait: on 2 shared cores, 2 threads ran the dense net 10-20x slower
        # than 1 whenever another process was busy (measured 0.9 s vs 7-21 s per epoch)
        torch.set_num_threads(cfg.threads)
    rank, world_size = distributed.rank_world()
    is_main = rank == 0
    if world_size > 1:  # launched by torchrun: join the process group, take this rank's GPU
        device = distributed.init(device)
    data = load_splits(cfg, device)
    seed_everything(cfg.seed)  # the initial weights
    net = build_model(cfg, tuple(data.train_x.shape[1:])).to(device)
    if cfg.untie:  # before the optimiser sees the parameters; made equal again after the initialisation
        net.untie()
    n_labels = int(data.train_y.max()) + 1
    if net.num_classes < n_labels:
        raise SpecError(f"the spec's last layer has {net.num_classes} classes but {cfg.dataset} has labels "
                        f"0..{n_labels - 1}; end the spec with {n_labels}")
    for x in (data.train_x, data.val_x, data.test_x):
        check_images(x, net.input_shape, name=f"{cfg.dataset} images")
    objective = get_objective(cfg.objective)
    if cfg.objective == "sampled-layer":   # every setting is checked before the run folder exists
        try:
            sampled_layer(net, cfg.sample_layer, cfg.code_weight)
        except ValueError as e:
            raise ConfigError(f"--sample-layer / --code-weight: {e}") from None
    if cfg.out is None:
        cfg.out = cfg.default_out()
    run_dir = Path(cfg.out)
    if is_main:
        run_dir = runs.prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)

    # -- state: fresh, or everything restored from the checkpoint --
    optimizer = OPTIMIZERS[cfg.optimizer](net.parameters(), cfg)
    # every random draw of the loop (shifts, dynamic binarisation, x̃^k of (22)) comes from here
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start_epoch, start_step, history = 0, 0, []
    partial = {"sums": torch.zeros(6, dtype=torch.float64), "seconds": 0.0}
    if resume:
        ckpt = load_checkpoint(run_dir, map_location=device)
        stored = model_from_state(ckpt["model"], device)
        if (stored.spec, stored.input_shape, stored.units.name) != (net.spec, net.input_shape, net.units.name):
            raise CheckpointError(f"{run_dir}: the checkpoint holds spec {stored.spec} ({stored.units.name}) "
                                  f"but the config asks for {net.spec} ({net.units.name})")
        if stored.tied != net.tied:
            raise CheckpointError(f"{run_dir}: the checkpoint holds a {'tied' if stored.tied else 'untied'} net "
                                  f"but the config asks for {'an untied' if cfg.untie else 'a tied'} one")
        net.load_state_dict(stored.state_dict())
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], generator)
        start_epoch, start_step = ckpt["position"]["epoch"], ckpt["position"]["step"]
        history, partial = ckpt["history"], ckpt["partial"]
        log(f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step}")
    else:
        initialise(net, cfg.init, data.train_x[:1024])  # "data": centred pre-activations (init.py)
        if cfg.init_input_bias == "mean-image":
            init_input_bias(net, data.train_x)
        net.sync_reverse_weights()  # --untie: both copies start from the initialised weights
    if is_main:
        runs.write_config(run_dir, asdict(cfg))
        runs.write_metrics(run_dir, history)

    def checkpoint(epoch: int, step: int, sums: torch.Tensor, seconds: float) -> None:
        if is_main:  # one writer in a distributed run
            save_checkpoint(run_dir / "checkpoint.pt", {
                "model": model_state(net), "optimizer": optimizer.state_dict(), "rng": rng_state(generator),
                "position": {"epoch": epoch, "step": step}, "partial": {"sums": sums.cpu(), "seconds": seconds},
                "history": history, "config": asdict(cfg),
                "data_order": {"scheme": "randperm(seed * 1000003 + epoch)", "seed": cfg.seed}})

    if not resume:  # so a run stopped before its first save is still one that --resume continues
        checkpoint(start_epoch, start_step, partial["sums"], 0.0)
    if start_epoch >= cfg.epochs:
        log(f"--epochs {cfg.epochs}: no epoch left to train ({len(history)} done); evaluating and saving the "
            f"{'trained' if history else 'initialised'} network as it is")

    # the loss as one module, so DistributedDataParallel (under torchrun) syncs its gradients; the
    # discriminative net's reverse loss is measured in the eval pass, not per step
    model = distributed.wrap(
        distributed.ObjectiveModule(net, objective, **objective_kwargs(cfg, generator, report_reverse=False)),
        device, find_unused_parameters=cfg.objective == "discriminative" or cfg.untie)
    if cfg.compile:
        model = torch.compile(model)
    n_train = len(data.train_x)
    steps_per_epoch = math.ceil(n_train // world_size / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    show_bar = is_main and sys.stderr.isatty()
    net.train()
    # the data were checked once when loaded: the hot path skips the per-call value checks (each a
    # host sync on a GPU), as Pyro's own validation switch allows
    with StopSignals() as stop, pyro.validation_enabled(False):
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter() - partial["seconds"]
            sums = partial["sums"].to(device)  # images, correct, forward, reverse/pixel, reverse sum, total
            order = shard_indices(epoch_permutation(n_train, cfg.seed, epoch), rank, world_size).to(device)
            batches = order.split(cfg.batch_size)
            bar = _progress(len(batches), start_step, f"epoch {epoch + 1}/{cfg.epochs}", show_bar)
            for step in range(start_step, len(batches)):
                idx = batches[step]
                x, y = data.train_x[idx], data.train_y[idx]
                if cfg.augment == "shift":
                    x = random_shift(x, generator)
                if cfg.binarize == "dynamic":  # a fresh draw of the binary image x^0 ~ Bernoulli(intensity)
                    x = torch.bernoulli(x, generator=generator)
                lr = lr_at(cfg, (epoch * steps_per_epoch + step) / total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                    parts = model(x, y)
                if not torch.isfinite(parts.total):
                    raise NonFiniteLossError(
                        f"non-finite loss ({parts.total.item()}) at epoch {epoch + 1}, step {step + 1} of "
                        f"{len(batches)} (batch of training images {idx[:5].tolist()}...); stopped before updating. "
                        f"The last good checkpoint is {run_dir / 'checkpoint.pt'}: lower --lr or set --grad-clip, "
                        "then --resume")
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                optimizer.step()
                # running sums stay on the device: no host sync per step for the metrics
                sums += len(idx) * torch.stack([
                    torch.ones((), dtype=torch.float64, device=device), (parts.logits.argmax(1) == y).double().mean(),
                    parts.forward_nll.double(), parts.reverse_nll_per_pixel.double(), parts.reverse_nll_sum.double(),
                    parts.total.detach().double()])
                if bar is not None:
                    bar.update(1)
                if stop.received is not None:
                    if bar is not None:
                        bar.close()
                    checkpoint(epoch, step + 1, sums, time.perf_counter() - t0)
                    raise TrainingInterrupted(stop.received, run_dir, epoch, step + 1)
            if bar is not None:
                bar.close()

            # -- end of epoch: combine the ranks' sums, evaluate, log, save --
            sums = distributed.all_reduce_sum(sums)  # a no-op on one process
            correct, fwd, rev_px, rev_sum, total = (sums[1:] / sums[0]).tolist()
            lr = lr_at(cfg, ((epoch + 1) * steps_per_epoch - 1) / total_steps)
            val = evaluate(net, cfg, data.val_x, data.val_y)
            row = {"epoch": epoch + 1, "train_acc": correct, "val_acc": val["acc"], "forward_nll": fwd,
                   "val_forward_nll": val["forward_nll"], "reverse_nll_per_pixel": rev_px,
                   "val_reverse_nll_per_pixel": val["reverse_nll_per_pixel"], "reverse_nll_sum": rev_sum,
                   "val_reverse_nll_sum": val["reverse_nll_sum"], "loss": total, "lr": lr,
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            start_step, partial = 0, {"sums": torch.zeros(6, dtype=torch.float64), "seconds": 0.0}
            checkpoint(epoch + 1, 0, partial["sums"], 0.0)
            if is_main:
                runs.append_metrics(run_dir, row)
                log(_epoch_line(row, cfg.epochs))
            if stop.received is not None:  # a signal during the evaluation
                raise TrainingInterrupted(stop.received, run_dir, epoch + 1, 0)

    summary = finish(net, cfg, data, run_dir, history, is_main, log)
    return TrainResult(run_dir, net, history, summary)


def finish(net: DCIM, cfg: TrainConfig, data: Splits, run_dir: Path, history: list[dict[str, Any]],
           is_main: bool, log=print) -> dict[str, Any]:
    """Final validation and test numbers into ``summary.json``, and the figures."""
    val, test = evaluate(net, cfg, data.val_x, data.val_y), evaluate(net, cfg, data.test_x, data.test_y)
    summary = {"epochs": len(history), "seconds": sum(r["seconds"] for r in history),
               **{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()},
               "n_train": len(data.train_x), "n_val": len(data.val_x), "n_test": len(data.test_x),
               "device": str(data.train_x.device), "threads": torch.get_num_threads(), "run_dir": str(run_dir)}
    if is_main:
        runs.write_json(run_dir / runs.SUMMARY_NAME, summary)
        if cfg.figures:
            from .plots import run_figures

            run_figures(net, cfg, history, run_dir, seed=cfg.seed)
        log(f"final: val_acc {val['acc']:.4f}, val reverse loss {val['reverse_nll_per_pixel']:.4f} per pixel "
            f"({val['reverse_nll_sum']:.1f} nats per image), test_acc {test['acc']:.4f}, "
            f"{summary['seconds']:.1f} s training; run folder {run_dir}")
    return summary


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    train_rev = "" if math.isnan(row["reverse_nll_per_pixel"]) else f" rev/px {row['reverse_nll_per_pixel']:.4f}"
    return (f"epoch {row['epoch']:>3}/{epochs}  train acc {row['train_acc']:.4f} fwd {row['forward_nll']:.4f}"
            f"{train_rev} | val acc {row['val_acc']:.4f} fwd {row['val_forward_nll']:.4f} "
            f"rev/px {row['val_reverse_nll_per_pixel']:.4f} | {row['seconds']:.1f} s")


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
