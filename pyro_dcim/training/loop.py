"""The training loop: discriminative, bidirectional (21), sampled-layer (22) and the likelihood objectives.

    from pyro_dcim.training import TrainConfig, train
    result = train(TrainConfig(arch="dense", objective="bidirectional", epochs=15, out="runs/dense-21"))

:func:`train` reads top to bottom: set up (every setting checked before the run folder exists),
start fresh or resume, then the epochs, each a run of :func:`step` calls and an
:func:`end_epoch`.  The data live on the device as tensors, visited in an order that is a pure
function of ``(seed, epoch)`` (:mod:`.batches`).  A checkpoint is written atomically after every
epoch (and on SIGINT/SIGTERM, mid-epoch) with the model, optimiser, RNG states, the position
``(epoch, step)`` and the metrics so far, so that a resumed run reproduces an uninterrupted one
exactly on CPU.  All writes are guarded by ``is_main``: one writer in a distributed run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyro
import torch

from ..init import init_input_bias, initialise
from ..model import DCIM
from ..objectives import sampled_layer
from ..spec import SpecError
from ..validation import check_images
from . import distributed, runs
from .atomic import write_error
from .batches import Splits, epoch_order, load_splits, observed_labels, random_shift, shard_indices
from .checkpoint import Architecture, CheckpointError, load_checkpoint, load_parameters, model_state, save_checkpoint
from .config import OPTIMIZERS, ConfigError, TrainConfig, resolve_device
from .evaluation import build_model, evaluate, objective_call
from .metrics import EpochRow, Tally, TrainMeasures
from .rng import rng_state, seed_everything, set_rng_state
from .schedule import lr_at, reverse_weight_at
from .signals import StopSignals, TrainingInterrupted

__all__ = ["TrainResult", "NonFiniteLossError", "train", "evaluate", "build_model", "lr_at", "LABELS_OPTIONAL"]

#: objectives that train on images without labels (``--labels N``); discriminative uses the labelled ones alone
LABELS_OPTIONAL = ("rws", "wake-sleep", "generative", "discriminative")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the step's update."""


@dataclass
class TrainResult:
    run_dir: Path
    net: DCIM
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None  # the settings the run used (``out`` filled in)


# -- setting up -------------------------------------------------------------------------------
@dataclass
class Setup:
    """What a run is: its settings (``out`` filled in), device, place in a distributed run, data and net."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    data: Splits
    net: DCIM
    run_dir: Path
    created: bool = False   # the run made its folder (so an unsaved start can remove it again)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(cfg: TrainConfig, resume: bool, overwrite: bool) -> Setup:
    """Check every setting, load the data and build the net, then (only then) prepare the run folder."""
    cfg.validate()
    if cfg.labels is not None and cfg.objective not in LABELS_OPTIONAL:
        raise ConfigError(f"--labels {cfg.labels} needs an objective that can learn without labels "
                          f"({', '.join(LABELS_OPTIONAL)}), not {cfg.objective}")
    if cfg.labels == 0 and cfg.objective == "discriminative":
        raise ConfigError("--labels 0 leaves the discriminative objective nothing to learn from; use generative, "
                          "rws or wake-sleep")
    if cfg.classes is not None and cfg.labels != 0:
        raise ConfigError(f"--classes {cfg.classes} sets the mixture components of an unsupervised run (--labels 0); "
                          "with labels the class layer has the dataset's classes (end --arch with their number)")
    if cfg.class_prior == "learned" and (cfg.labels is None or cfg.objective == "discriminative"):
        raise ConfigError("--class-prior learned is taught by the likelihood of unlabelled images: it needs "
                          "--labels N or 0 and a generative objective (with every label, p(y) is the class "
                          "frequencies: the likelihood command's --class-prior train)")
    if (cfg.warm_start_epochs or cfg.ramp_epochs) and cfg.objective == "discriminative":
        raise ConfigError("--warm-start-epochs / --ramp-epochs ramp the reverse term, which the discriminative "
                          "objective does not have")
    if (cfg.warm_start_epochs or cfg.ramp_epochs) and cfg.compile:
        raise ConfigError("--warm-start-epochs / --ramp-epochs change the reverse weight every step, which would "
                          "recompile a --compile'd loss each time; leave out --compile")
    device = resolve_device(cfg.device)
    if cfg.threads:
        # intra-op threads spin-wait: on 2 shared cores, 2 threads ran the dense net 10-20x slower
        # than 1 whenever another process was busy (measured 0.9 s vs 7-21 s per epoch)
        torch.set_num_threads(cfg.threads)
    rank, world_size = distributed.rank_world()
    if world_size > 1:  # launched by torchrun: join the process group, take this rank's GPU
        device = distributed.init(device)
    data = load_splits(cfg, device)
    seed_everything(cfg.seed)  # the initial weights
    net = build_model(cfg, tuple(data.train_x.shape[1:])).to(device)
    if cfg.untie:  # before the optimiser sees the parameters; made equal again after the initialisation
        net.untie()
    n_labels = int(data.train_y.max()) + 1
    if net.num_classes < n_labels and cfg.labels != 0:
        raise SpecError(f"the spec's last layer has {net.num_classes} classes but {cfg.dataset} has labels "
                        f"0..{n_labels - 1}; end the spec with {n_labels}")
    for x in (data.train_x, data.val_x, data.test_x):
        check_images(x, net.input_shape, name=f"{cfg.dataset} images")
    if cfg.objective == "sampled-layer":
        try:
            sampled_layer(net, cfg.sample_layer, cfg.code_weight)
        except ValueError as e:
            raise ConfigError(f"--sample-layer / --code-weight: {e}") from None
    cfg = dataclasses.replace(cfg, out=cfg.out or cfg.default_out())  # the caller's config stays as given
    run_dir = Path(cfg.out)
    created = not run_dir.exists()
    if rank == 0:
        run_dir = runs.prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    return Setup(cfg, device, rank, world_size, data, net, run_dir, created)


# -- the state a checkpoint holds -------------------------------------------------------------
@dataclass
class State:
    """Everything that changes while training: parameters (in the net), optimiser, the loop's random
    generator, the position ``(epoch, step)``, the finished epochs and the current one's sums."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # every random draw of the loop: shifts, dynamic binarisation, x̃^k of (22)
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: torch.Tensor | None = None  # the epoch's Tally sums so far (None: none)
    seconds: float = 0.0                  # the epoch's seconds so far


def fresh_state(s: Setup) -> State:
    """A new run: the initialisation of ``cfg.init`` and the optimiser at its start."""
    initialise(s.net, s.cfg.init, s.data.train_x[:1024])  # "data": centred pre-activations (init.py)
    if s.cfg.init_input_bias == "mean-image":
        init_input_bias(s.net, s.data.train_x)
    s.net.sync_reverse_weights()  # --untie: both copies start from the initialised weights
    return State(OPTIMIZERS[s.cfg.optimizer](s.net.parameters(), s.cfg),
                 torch.Generator(device=s.device).manual_seed(s.cfg.seed))


def resumed_state(s: Setup, log: Callable[[str], object]) -> State:
    """Everything restored from the run's checkpoint, once its net is the one the settings build."""
    ckpt = load_checkpoint(s.run_dir, map_location=s.device)
    stored, wanted = Architecture.stored(ckpt["model"]), Architecture.of(s.net)
    if (stored.spec, stored.input_shape, stored.units) != (wanted.spec, wanted.input_shape, wanted.units):
        raise CheckpointError(f"{s.run_dir}: the checkpoint holds spec {stored.spec} ({stored.units}) "
                              f"but the config asks for {wanted.spec} ({wanted.units})")
    if stored.tied != wanted.tied:
        raise CheckpointError(f"{s.run_dir}: the checkpoint holds a {'tied' if stored.tied else 'untied'} net "
                              f"but the config asks for {'an untied' if s.cfg.untie else 'a tied'} one")
    load_parameters(s.net, ckpt["model"])
    state = State(OPTIMIZERS[s.cfg.optimizer](s.net.parameters(), s.cfg),
                  torch.Generator(device=s.device).manual_seed(s.cfg.seed))
    try:  # a foreign file that passed the plain-data load may still lack a piece or hold the wrong types
        state.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], state.generator)
        state.epoch, state.step = ckpt["position"]["epoch"], ckpt["position"]["step"]
        state.history, state.partial = ckpt["history"], ckpt["partial"]["sums"]
        state.seconds = ckpt["partial"]["seconds"]
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{s.run_dir}: not a resumable pyro_dcim checkpoint ({type(e).__name__}: {e})") from None
    log(f"resuming {s.run_dir} at epoch {state.epoch + 1}, step {state.step}")
    return state


def save(s: Setup, state: State, tally: Tally | None = None, seconds: float = 0.0) -> None:
    """The checkpoint at ``state``'s position; ``tally``: the sums of an epoch stopped part way."""
    if not s.is_main:  # one writer in a distributed run
        return
    sums = tally.sums.cpu() if tally is not None else Tally(TrainMeasures, torch.device("cpu")).sums
    save_checkpoint(s.run_dir / "checkpoint.pt", {
        "model": model_state(s.net), "optimizer": state.optimizer.state_dict(), "rng": rng_state(state.generator),
        "position": {"epoch": state.epoch, "step": state.step}, "partial": {"sums": sums, "seconds": seconds},
        "history": state.history, "config": dataclasses.asdict(s.cfg),
        "data_order": {"scheme": "randperm(seed * 1000003 + epoch)", "seed": s.cfg.seed}})


# -- one step and the end of an epoch ---------------------------------------------------------
def step(model: torch.nn.Module, s: Setup, state: State, tally: Tally, idx: torch.Tensor, lr: float) -> None:
    """One update on the training images ``idx`` (augmented and binarised here, from ``state.generator``)."""
    cfg = s.cfg
    x, y = s.data.train_x[idx], s.data.train_y[idx]
    seen = observed_labels(y, None if s.data.labelled is None else s.data.labelled[idx])
    if cfg.augment == "shift":
        x = random_shift(x, state.generator)
    if cfg.binarize == "dynamic":  # a fresh draw of the binary image x^0 ~ Bernoulli(intensity)
        x = torch.bernoulli(x, generator=state.generator)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
        parts = model(x, seen)
    if not torch.isfinite(parts.total):
        raise NonFiniteLossError(
            f"non-finite loss ({parts.total.item()}) at epoch {state.epoch + 1}, step {state.step + 1} (batch of "
            f"training images {idx[:5].tolist()}...); stopped before updating. The last good checkpoint is "
            f"{s.run_dir / 'checkpoint.pt'}: lower --lr or set --grad-clip, then --resume")
    state.optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(s.net.parameters(), cfg.grad_clip)
    state.optimizer.step()
    tally.add(parts, y)  # the accuracy against every image's true label, hidden from the objective or not
    state.step += 1


def end_epoch(s: Setup, state: State, tally: Tally, lr: float, seconds: float, log: Callable[[str], object]) -> None:
    """Combine the ranks' sums, evaluate, then record the epoch: checkpoint first, metrics files after."""
    tally.sums = distributed.all_reduce_sum(tally.sums)  # a no-op on one process
    train = tally.means()
    if s.cfg.labels == 0:  # the components are not the classes: only the evaluation maps them (cluster accuracy)
        train = dataclasses.replace(train, acc=math.nan)
    row = EpochRow.of(state.epoch + 1, train, evaluate(s.net, s.cfg, s.data.val_x, s.data.val_y), lr, seconds)
    state.history.append(row.as_dict())
    state.epoch, state.step, state.partial, state.seconds = state.epoch + 1, 0, None, 0.0
    save(s, state)
    if s.is_main:
        runs.append_metrics(s.run_dir, row.as_dict())
        log(row.line(s.cfg.epochs))


# -- the loop ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], object] = print) -> TrainResult:
    """Train a DCIM as ``cfg`` says, writing the run folder ``cfg.out`` (``cfg`` itself is not changed).

    ``resume=True`` continues the run in ``cfg.out`` from its checkpoint.  Raises
    ConfigError / DataError / SpecError / RunDirError / CheckpointError on bad input
    (before anything is trained), :class:`NonFiniteLossError` and :class:`TrainingInterrupted`.
    """
    s = setup(cfg, resume, overwrite)
    cfg, net, data = s.cfg, s.net, s.data
    state = resumed_state(s, log) if resume else fresh_state(s)
    try:
        if s.is_main:
            runs.write_config(s.run_dir, dataclasses.asdict(cfg))
            runs.write_metrics(s.run_dir, state.history)
        if not resume:  # so a run stopped before its first save is still one that --resume continues
            save(s, state)
    except Exception as e:
        if write_error(e) is None:
            raise
        if s.is_main and not resume:  # what a folder without a checkpoint holds only blocks the same command
            runs.remove_unsaved_run(s.run_dir, s.created)
        raise _cannot_write(s, e, "nothing was saved, so the same command can run again once it can write there"
                            if not resume else "the run is as it was; resume it once it can write there") from None
    if state.epoch >= cfg.epochs:
        log(f"--epochs {cfg.epochs}: no epoch left to train ({len(state.history)} done); evaluating and saving the "
            f"{'trained' if state.history else 'initialised'} network as it is")

    # the loss as one module, so DistributedDataParallel (under torchrun) syncs its gradients; the
    # discriminative net's reverse loss is measured in the eval pass, not per step
    objective, settings = objective_call(cfg, state.generator, report_reverse=False)
    module = distributed.ObjectiveModule(net, objective, **settings)
    ramped = cfg.warm_start_epochs > 0 or cfg.ramp_epochs > 0
    model = distributed.wrap(module, s.device,
                             find_unused_parameters=cfg.objective == "discriminative" or cfg.untie or ramped)
    if cfg.compile:
        model = torch.compile(model)

    def order_of(epoch: int) -> torch.Tensor:  # a pure function of (seed, epoch): nothing to resume
        # laid out in batches of one step over all ranks, so N ranks of B equal one process of N x B
        return epoch_order(len(data.train_x), cfg.seed, epoch, data.labelled, cfg.labelled_share,
                           cfg.batch_size * s.world_size)

    n_train = len(order_of(0))  # images per epoch: the same in every epoch
    steps_per_epoch = math.ceil(n_train // s.world_size / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    steps_left = (cfg.epochs - state.epoch) * steps_per_epoch - state.step
    timed, timed_from = 0, time.perf_counter()   # the expected time, said once after the first few steps
    net.train()
    # the data were checked once when loaded: the hot path skips the per-call value checks (each a
    # host sync on a GPU), as Pyro's own validation switch allows
    with _write_failures_say_resume(s), StopSignals() as stop, pyro.validation_enabled(False):
        while state.epoch < cfg.epochs:
            t0 = time.perf_counter() - state.seconds
            tally = Tally(TrainMeasures, s.device, state.partial)
            order = shard_indices(order_of(state.epoch), s.rank, s.world_size)
            batches = order.to(s.device).split(cfg.batch_size)
            bar = _progress(len(batches), state.step, f"epoch {state.epoch + 1}/{cfg.epochs}", s.is_main)
            while state.step < len(batches):
                lr = lr_at(cfg, (state.epoch * steps_per_epoch + state.step) / total_steps)
                if ramped:  # a pure function of the position, so a resumed run ramps on exactly as before
                    module.settings["reverse_weight"] = reverse_weight_at(cfg, state.epoch + state.step / len(batches))
                step(model, s, state, tally, batches[state.step], lr)
                timed += 1
                if timed == min(TIMED_STEPS, steps_left) and s.is_main:
                    log(expected_time(time.perf_counter() - timed_from, timed, steps_left, cfg.epochs - state.epoch))
                if bar is not None:
                    bar.update(1)
                if stop.received is not None:
                    if bar is not None:
                        bar.close()
                    save(s, state, tally, time.perf_counter() - t0)
                    raise TrainingInterrupted(stop.received, s.run_dir, state.epoch, state.step)
            if bar is not None:
                bar.close()
            lr = lr_at(cfg, ((state.epoch + 1) * steps_per_epoch - 1) / total_steps)
            end_epoch(s, state, tally, lr, time.perf_counter() - t0, log)
            if stop.received is not None:  # a signal during the evaluation
                raise TrainingInterrupted(stop.received, s.run_dir, state.epoch, 0)

    with _write_failures_say_resume(s):
        summary = finish(s, state.history, log)
    return TrainResult(s.run_dir, net, state.history, summary, cfg)


def finish(s: Setup, history: list[dict[str, Any]], log: Callable[[str], object] = print) -> dict[str, Any]:
    """Final validation and test numbers into ``summary.json``, and the figures."""
    net, cfg, data = s.net, s.cfg, s.data
    val, test = evaluate(net, cfg, data.val_x, data.val_y), evaluate(net, cfg, data.test_x, data.test_y)
    summary = {"epochs": len(history), "seconds": sum(r["seconds"] for r in history),
               **{f"val_{k}": v for k, v in val.as_dict().items()},
               **{f"test_{k}": v for k, v in test.as_dict().items()},
               "n_train": len(data.train_x), "n_val": len(data.val_x), "n_test": len(data.test_x),
               **_labelled_counts(data),
               "device": str(data.train_x.device), "threads": torch.get_num_threads(), "run_dir": str(s.run_dir)}
    if s.is_main:
        runs.write_json(s.run_dir / runs.SUMMARY_NAME, summary)
        if cfg.figures:
            from ..plots import run_figures

            run_figures(net, cfg, history, s.run_dir, seed=cfg.seed)
        log(f"final: val_acc {val.acc:.4f}, val reverse loss {val.reverse_nll_per_pixel:.4f} per pixel "
            f"({val.reverse_nll_sum:.1f} nats per image), test_acc {test.acc:.4f}, "
            f"{summary['seconds']:.1f} s training; run folder {s.run_dir}")
    return summary


def _labelled_counts(data: Splits) -> dict[str, Any]:
    """``--labels N``: how many training images kept their labels, per class (the summary records them)."""
    if data.labelled is None:
        return {}
    kept = data.train_y[data.labelled].cpu()
    return {"n_labelled": len(kept), "labelled_per_class": torch.bincount(kept).tolist()}


def _cannot_write(s: Setup, error: BaseException, what: str) -> runs.RunDirError:
    cause = write_error(error)
    return runs.RunDirError(f"cannot write to run folder {s.run_dir}: {cause.strerror or cause}; {what}")


@contextmanager
def _write_failures_say_resume(s: Setup) -> Iterator[None]:
    """A full disk (or a folder gone read-only) after the first save: checkpoints are written atomically,
    so the last one is whole, and ``--resume`` continues from it (and rewrites the metrics from it)."""
    try:
        yield
    except Exception as e:
        if write_error(e) is None:
            raise
        raise _cannot_write(s, e, f"the last checkpoint is whole: make room, then resume with: "
                                  f"python -m pyro_dcim.fit --resume {s.run_dir}") from None


TIMED_STEPS = 5


def expected_time(seconds: float, steps: int, steps_left: int, epochs_left: int) -> str:
    """The line a run prints once its first ``steps`` steps took ``seconds``: what the rest should take."""
    per_step = seconds / steps
    left = per_step * (steps_left - steps)
    clock = f"{left / 3600:.1f} h" if left >= 5400 else f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
    return (f"{per_step:.3g} s per step over the first {steps}: expect about {clock} for the other "
            f"{steps_left - steps} steps, plus a validation pass after each of the {epochs_left} epoch(s) left")


def _progress(total: int, initial: int, desc: str, is_main: bool):
    if not (is_main and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
