"""Training settings: :class:`TrainConfig`, what ``config.json`` stores and ``--config`` reads back."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import torch

from .approximations import APPROXIMATIONS
from .init import INIT_SCHEMES
from .objectives import OBJECTIVES

__all__ = ["DEFAULT_LR", "TrainConfig", "ConfigError", "OPTIMIZERS", "resolve_device"]


class ConfigError(ValueError):
    """A training setting that is out of range or unavailable (e.g. CUDA without a GPU)."""


OPTIMIZERS = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, weight_decay=c.weight_decay),
}


#: Adam's default step by unit encoding.  A ±1 net with weights ``W`` is the {0,1} net with
#: weights ``4W`` (bit logit ``2a``, state ``2x − 1``), so the same step in the equivalent
#: {0,1} weights needs a quarter of the rate; at the {0,1} rate ±1 runs lost 2 points (0.950
#: against 0.971 validation accuracy on the bundled subset) or, at 1e-2, collapsed to 0.76.
DEFAULT_LR = {"01": 5e-3, "pm1": 1.25e-3}


@dataclass
class TrainConfig:
    """Every setting of a run; ``config.json`` stores it and ``--config`` reads it back."""

    arch: str = "dense"                      # "dense" | "cnn" | a spec in the paper's notation
    units: str = "01"                        # "01" (sigmoid, eq. 6-7) | "pm1" (tanh, eq. 8-9)
    objective: str = "bidirectional"         # "discriminative" | "bidirectional" (21) | "sampled-layer" (22) | "rws"
                                             # | "wake-sleep" | "generative" (objectives.GENERATIVE)
    reverse_weight: float = 10.0             # weight of -log p(x^0 | ·) in the loss (the paper's sum: 1)
    reverse_reduction: str = "mean"          # "mean": BCE per pixel (the paper's number) | "sum": nats per image
    sample_layer: Optional[int] = None       # k of (22); None = n-1
    approximation: str = "first-order"       # the passes: "first-order" (eq. 2) | "ap2" | "variational"
    code_weight: float = 0.0                 # (22) + code_weight · -log p(x̃^{n-1} | class); 0 = the paper's (22)
    particles: int = 5                       # K of "rws" / "wake-sleep": draws h ~ q(h | x^0) per image
    wake_phi_weight: Optional[float] = None  # weight of wake-φ; None: the objective's own (rws 1, wake-sleep 0)
    sleep_weight: Optional[float] = None     # weight of sleep-φ on dreams; None: the objective's own (0 / 1)
    untie: bool = False                      # ablation: the reverse chain gets its own W^k (biases stay shared)
    dataset: str = "mnist-subset"            # "mnist-subset" (bundled) | "mnist" | "fashion-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    binarize: str = "none"                   # "none" | "threshold" | "sample" (once) | "dynamic" (every step)
    augment: str = "shift"                   # "shift": random translations by up to ±1 pixel | "none"
    val_size: Optional[int] = None           # last images of the training split; None: see default_val_size
    train_size: Optional[int] = None         # use only the first N remaining training images (quick runs)
    epochs: int = 20
    batch_size: int = 100
    lr: Optional[float] = None               # None: DEFAULT_LR of the units
    lr_schedule: str = "cosine"              # "constant" | "cosine" (per step, down to 0 at the last epoch)
    optimizer: str = "adam"                  # "adam" | "adamw" | "sgd" (momentum 0.9) | "rmsprop"
    weight_decay: float = 0.0
    grad_clip: Optional[float] = None        # max global gradient norm
    init: str = "data"                       # weights: "data" | "torch" | "glorot" | "glorot-sigmoid" (init.py)
    init_input_bias: str = "mean-image"      # b^0 = logit(mean training image) | "zero"
    seed: int = 0
    device: str = "auto"                     # "auto" | "cpu" | "cuda" | "cuda:N"
    out: Optional[str] = None                # run folder; None: runs/<timestamp>-<arch>-<objective>
    figures: bool = True
    eval_batch_size: int = 1000
    threads: int = 1                         # CPU threads; 0 = PyTorch's default (all cores)
    compile: bool = False                    # torch.compile the training step's loss module
    amp: str = "none"                        # "none" | "bf16": autocast the step to bfloat16 (CUDA or CPU)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.units, DEFAULT_LR["01"])

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        checks = [
            (self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}"),
            (self.units in ("01", "pm1"), "units must be '01' or 'pm1'"),
            (self.approximation in APPROXIMATIONS, f"approximation must be one of {', '.join(APPROXIMATIONS)}, "
             f"got {self.approximation!r}"),
            (self.reverse_reduction in ("mean", "sum"), "reverse_reduction must be 'mean' or 'sum'"),
            (self.lr_schedule in ("constant", "cosine"), "lr_schedule must be 'constant' or 'cosine'"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.augment in ("none", "shift"), "augment must be 'none' or 'shift'"),
            (self.binarize in ("none", "threshold", "sample", "dynamic"),
             "binarize must be 'none', 'threshold', 'sample' or 'dynamic'"),
            (self.init in INIT_SCHEMES, f"init must be one of {', '.join(INIT_SCHEMES)}"),
            (self.amp in ("none", "bf16"), f"amp must be 'none' or 'bf16', got {self.amp!r}"),
            (self.code_weight >= 0, f"code weight must be >= 0, got {self.code_weight}"),
            (self.particles >= 1, f"particles must be >= 1, got {self.particles}"),
            (self.wake_phi_weight is None or self.wake_phi_weight >= 0,
             f"wake-phi weight must be >= 0, got {self.wake_phi_weight}"),
            (self.sleep_weight is None or self.sleep_weight >= 0,
             f"sleep weight must be >= 0, got {self.sleep_weight}"),
            (self.init_input_bias in ("mean-image", "zero"), "init_input_bias must be 'mean-image' or 'zero'"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be > 0, got {self.lr}"),
            (self.reverse_weight >= 0, f"reverse weight must be >= 0, got {self.reverse_weight}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad clip must be > 0, got {self.grad_clip}"),
            (self.val_size is None or self.val_size >= 1, f"val size must be >= 1, got {self.val_size}"),
            (self.train_size is None or self.train_size >= 1, f"train size must be >= 1, got {self.train_size}"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            (self.sample_layer is None or self.sample_layer >= 1,
             f"sample layer must be >= 1, got {self.sample_layer}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The declared defaults, before those that depend on other settings (``lr``) are filled in."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in config")
        hints = get_type_hints(cls)
        for name, value in data.items():
            if not _has_type(value, hints[name]):
                raise ConfigError(f"setting {name} must be {_type_name(hints[name])}, got {value!r}")
        return cls(**data)

    def default_out(self) -> str:
        arch = self.arch if self.arch in ("dense", "cnn") else "custom"
        return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}-{self.objective}")


def _has_type(value: Any, hint: Any) -> bool:
    """Is ``value`` (read from JSON) of the declared type?  An int passes for a float, a bool for nothing else."""
    if get_origin(hint) is Union:
        return any(_has_type(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Union:
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    return {type(None): "null", float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; asking for CUDA without it is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA device "
                          f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device
