"""Training settings: :class:`TrainConfig`, what ``config.json`` stores and ``--config`` reads back.

Each setting is declared once, as a field whose metadata (:func:`setting`) holds its help text,
its choices or bounds and its command-line group; :meth:`TrainConfig.validate` and the
``fit`` command's options (:mod:`pyro_dcim.cli.fit`) are both built from those declarations.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import Field, dataclass, field, fields
from typing import Any, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import torch

from ..approximations import APPROXIMATIONS
from ..data import DATASETS
from ..init import INIT_SCHEMES
from ..objectives import GENERATIVE, OBJECTIVES

__all__ = ["DEFAULT_LR", "OBJECTIVE_DEFAULTS", "objective_defaults", "TrainConfig",
           "ConfigError", "OPTIMIZERS", "GROUPS", "setting", "resolve_device"]


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

#: the command-line groups of the settings, in the order ``--help`` lists them
GROUPS = ("run", "model and objective", "data", "optimisation")


#: settings whose default depends on the objective (``None`` in a config until the objective fills it in)
OBJECTIVE_DEFAULTS = {
    None: dict(reverse_weight=10.0, reverse_reduction="mean", untie=False),
    # the likelihood objectives in nats per image, as every run of docs/generative_training.md
    "rws": dict(reverse_weight=1.0, reverse_reduction="sum"),
    "wake-sleep": dict(reverse_weight=1.0, reverse_reduction="sum"),
    # the best generator of analysis/results/generator_comparison.md: untied rws, recognition weights
    # trained mostly by the class term (wake-phi 0.01 is the objective's own default)
    "generative": dict(reverse_weight=1.0, reverse_reduction="sum", untie=True),
}


def objective_defaults(objective: str) -> dict[str, Any]:
    """The defaults of the objective-dependent settings for ``objective``."""
    return {**OBJECTIVE_DEFAULTS[None], **OBJECTIVE_DEFAULTS.get(objective, {})}


def setting(default: Any, help: str, group: str, *, choices: Optional[Sequence[str]] = None,
            minimum: Optional[float] = None, above: Optional[float] = None, label: Optional[str] = None,
            default_text: Optional[str] = None, metavar: Optional[str] = None, flag: Optional[str] = None,
            below: Optional[float] = None, none_word: str = "none") -> Any:
    """A field of :class:`TrainConfig` with what validation and the command line need to know.

    ``choices``: the allowed values; ``minimum`` / ``above`` / ``below``: ``value >= minimum`` /
    ``value > above`` / ``value < below`` (``None`` always passes); ``label``: the setting's name in
    messages; ``default_text``: how ``--help`` states the default (else the default itself); ``flag``:
    the option of a ``True`` default that turns it off (``--no-figures``); ``none_word``: the word the
    command line reads as ``None`` (``--labels all``).
    """
    assert group in GROUPS, group
    return field(default=default, metadata=dict(help=help, group=group, choices=choices, minimum=minimum,
                                                above=above, below=below, label=label, default_text=default_text,
                                                metavar=metavar, flag=flag, none_word=none_word))


@dataclass
class TrainConfig:
    """Every setting of a run; ``config.json`` stores it and ``--config`` reads it back."""

    arch: str = setting("dense", "dense (784-512-512-10) | cnn (the paper's 8-layer CNN) | a spec in the paper's "
                        "notation, e.g. '(3,1,32) (2,2,32) 50 10' or '512-512-10'", "model and objective")
    units: str = setting("01", "binary units {0,1} with sigmoid (eq. 6-7) or {-1,+1} with tanh (eq. 8-9)",
                         "model and objective", choices=("01", "pm1"))
    objective: str = setting("bidirectional", "discriminative: cross-entropy only; bidirectional: eq. (21); "
                             "sampled-layer: eq. (22); rws: tied reweighted wake-sleep (K particles); wake-sleep: "
                             f"wake-theta + sleep-phi; generative: the best generator ({GENERATIVE} with --untie and "
                             "wake-phi 0.01)",
                             "model and objective", choices=tuple(OBJECTIVES))
    reverse_weight: Optional[float] = setting(None, "weight of the reverse term -log p(x^0|.) (1 is the paper's "
                                              "unweighted sum (21))", "model and objective", minimum=0,
                                              default_text="10; 1 for rws, wake-sleep and generative")
    reverse_reduction: Optional[str] = setting(None, "reverse term as binary cross-entropy per pixel (mean, the "
                                               "paper's number) or summed over pixels (nats per image)",
                                               "model and objective", choices=("mean", "sum"),
                                               default_text="mean; sum for rws, wake-sleep and generative")
    sample_layer: Optional[int] = setting(None, "the layer x^K sampled by objective (22)", "model and objective",
                                          minimum=1, default_text="n-1, the layer below the class", metavar="K")
    approximation: str = setting("first-order", "the passes that approximate p(x^n|x^0) and p(x^0|.): first-order "
                                 "(eq. 2, the DNN), ap2 (means and variances) or variational (mean-field lower "
                                 "bounds; slow)", "model and objective", choices=tuple(APPROXIMATIONS))
    code_weight: float = setting(0.0, "with sampled-layer: also train the class-to-code link p(x^{n-1} | class) on "
                                 "the sampled codes, with this weight (helps class-conditional generation)",
                                 "model and objective", minimum=0, default_text="0, the paper's (22)")
    particles: int = setting(5, "rws / wake-sleep: particles h ~ q(h | x^0) per image", "model and objective",
                             minimum=1, metavar="K")
    wake_phi_weight: Optional[float] = setting(None, "rws / wake-sleep: weight of the wake-phi gradient",
                                               "model and objective", minimum=0, label="wake-phi weight",
                                               default_text="rws 1, wake-sleep 0, generative 0.01", metavar="W")
    sleep_weight: Optional[float] = setting(None, "rws / wake-sleep: weight of the sleep-phi gradient on dreams "
                                            "of the reverse model", "model and objective", minimum=0,
                                            default_text="rws 0, wake-sleep 1", metavar="W")
    warm_start_epochs: float = setting(0.0, "train discriminatively first: the reverse (generative) term has weight 0 "
                                       "for this many epochs", "model and objective", minimum=0, metavar="E",
                                       default_text="0, the reverse weight from the first step")
    ramp_epochs: float = setting(0.0, "after the warm start, raise the reverse term's weight linearly from 0 to "
                                 "--reverse-weight over this many epochs (per step)", "model and objective", minimum=0,
                                 metavar="E", default_text="0, at once")
    untie: Optional[bool] = setting(None, "separate forward and reverse weights (same architecture, biases shared), "
                                    "initialised equal: the tying ablation", "model and objective",
                                    default_text="no (tied); yes for generative")
    unlabelled_class: str = setting("sum", "with --labels N: how an unlabelled image's class enters its particles' "
                                    "weights: summed exactly over the classes, or sampled with the layers from the "
                                    "forward chain (docs/semi_supervised.md)", "model and objective",
                                    choices=("sum", "sample"))
    unlabelled_class_weight: Optional[float] = setting(
        None, "with --labels N: weight of the unlabelled images' class term, the cross-entropy of q(x^n | x^0) "
        "against the generator's posterior p(x^n | x^0)", "model and objective", minimum=0, metavar="W",
        default_text="0: at 0.1 and 1 it lowered the test accuracy, since the generator's posterior classifies "
        "worse than q (docs/semi_supervised.md); 1 with --labels 0, where it is the classifier's only teacher")
    unlabelled_class_threshold: float = setting(
        0.0, "with --labels N: the unlabelled class term counts only the images whose generator posterior gives its "
        "top class at least this probability (the rest train the generator alone)", "model and objective",
        minimum=0, below=1, metavar="P", default_text="0: every unlabelled image")
    class_prior: str = setting("uniform", "with --labels N or 0: the reverse chain's p(x^n), fixed uniform or "
                               "learned with the generator (the labelled classes and the unlabelled images' "
                               "likelihood teach it; a mixture's weights with --labels 0)", "model and objective",
                               choices=("uniform", "learned"))
    classes: Optional[int] = setting(None, "with --labels 0: the number of mixture components C of the class layer "
                                     "(replaces the spec's last entry)", "model and objective", minimum=2,
                                     metavar="C", default_text="the dataset's classes (10)")
    dataset: str = setting("mnist-subset", "mnist-subset: bundled 10k+2k MNIST digits, offline; mnist / "
                           "fashion-mnist: IDX files in --data-dir", "data", choices=DATASETS)
    data_dir: Optional[str] = setting(None, "folder with the four IDX files (.gz or not) or torchvision's "
                                      "MNIST/raw layout", "data", metavar="DIR", default_text="")
    download: bool = setting(False, "download the dataset with torchvision into --data-dir (needs internet; never "
                             "attempted otherwise)", "data")
    binarize: str = setting("none", "use intensities as soft targets, threshold at 0.5, draw one Bernoulli sample "
                            "per pixel once (sample) or at every step (dynamic)", "data",
                            choices=("none", "threshold", "sample", "dynamic"))
    augment: str = setting("shift", "shift: translate each training image by up to ±1 pixel at random (about +2 "
                           "points of accuracy on the subset; not in the paper); none", "data",
                           choices=("shift", "none"))
    labels: Optional[int] = setting(None, "keep the labels of N training images (balanced per class, chosen by "
                                    "--seed) and train on the others without theirs (objectives rws, wake-sleep, "
                                    "generative; discriminative uses the N alone); 0: unsupervised, the class "
                                    "layer a mixture of --classes components; all: every label", "data",
                                    minimum=0, metavar="N|all", default_text="all", none_word="all")
    labelled_share: Optional[float] = setting(0.1, "with --labels N: draw this fraction of every batch from the N "
                                              "labelled images, repeated as needed (an epoch is then one pass over "
                                              "the unlabelled ones); none, or a fraction the labelled images "
                                              "already fill: every training image once per epoch", "data", above=0,
                                              below=1, metavar="F")
    val_size: Optional[int] = setting(None, "validation = the last N training images", "data", minimum=1,
                                      default_text="10,000 for MNIST/Fashion-MNIST, 2,000 for the subset",
                                      metavar="N")
    train_size: Optional[int] = setting(None, "train on the first N of the remaining training images only", "data",
                                        minimum=1, default_text="all", metavar="N")
    epochs: int = setting(20, "number of epochs", "optimisation", minimum=0)
    batch_size: int = setting(100, "images per step", "optimisation", minimum=1)
    lr: Optional[float] = setting(None, "learning rate", "optimisation", above=0, label="learning rate",
                                  default_text=f"{DEFAULT_LR['01']:g} for --units 01, {DEFAULT_LR['pm1']:g} for "
                                  "pm1, the same step in the equivalent {0,1} weights")
    lr_schedule: str = setting("cosine", "constant, or cosine decay to 0 over the run (per step)", "optimisation",
                               choices=("constant", "cosine"))
    optimizer: str = setting("adam", "adam, adamw, sgd (momentum 0.9) or rmsprop", "optimisation",
                             choices=tuple(OPTIMIZERS))
    weight_decay: float = setting(0.0, "L2 weight decay", "optimisation", minimum=0,
                                  default_text="0: the paper uses no regulariser")
    grad_clip: Optional[float] = setting(None, "clip the global gradient norm to NORM", "optimisation", above=0,
                                         default_text="no clipping", metavar="NORM")
    init: str = setting("data", "initial weights: data (scale each W^k and set b^k so pre-activations are centred "
                        "with a set spread on a training batch; the deep {0,1} CNN needs it), torch (PyTorch's "
                        "default), glorot (Glorot uniform, zero biases) or glorot-sigmoid (Glorot x4)",
                        "model and objective", choices=tuple(INIT_SCHEMES))
    init_input_bias: str = setting("mean-image", "initialise b^0 to the logit of the mean training image, or to 0",
                                   "model and objective", choices=("mean-image", "zero"))
    seed: int = setting(0, "seeds weights, data order and samples", "run")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", "run", default_text="auto: CUDA when available")
    out: Optional[str] = setting(None, "the run folder", "run", metavar="DIR",
                                 default_text="runs/<timestamp>-<arch>-<objective>")
    figures: bool = setting(True, "skip the PNG figures", "run", flag="--no-figures")
    eval_batch_size: int = setting(1000, "images per evaluation batch", "optimisation", minimum=1)
    threads: int = setting(1, "CPU threads for PyTorch; 0 = all cores", "run", minimum=0,
                           default_text="1: on shared cores more threads can be many times slower")
    compile: bool = setting(False, "torch.compile the training step's loss (see docs/speed.md: measured, off by "
                            "default)", "run")
    amp: str = setting("none", "mixed precision: autocast the training step to bfloat16 (CUDA or CPU)", "run",
                       choices=("none", "bf16"))

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.units, DEFAULT_LR["01"])
        for name, value in objective_defaults(self.objective).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.unlabelled_class_weight is None:  # unsupervised, the class layer learns from the generator alone
            self.unlabelled_class_weight = 1.0 if self.labels == 0 else 0.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting (its declared choices or bounds)."""
        for f in fields(self):
            message = _check(f, getattr(self, f.name))
            if message is not None:
                raise ConfigError(message)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The declared defaults, before those that depend on other settings (``lr``, and the objective's
        :data:`OBJECTIVE_DEFAULTS`) are filled in."""
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


def _check(f: Field, value: Any) -> Optional[str]:
    """What is wrong with ``value`` by ``f``'s declaration, or ``None``."""
    meta = f.metadata
    label = meta.get("label") or f.name.replace("_", " ")
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}"
    if value is None:
        return None
    if meta.get("minimum") is not None and not value >= meta["minimum"]:
        return f"{label} must be >= {meta['minimum']}, got {value}"
    if meta.get("above") is not None and not (value > meta["above"] and math.isfinite(value)):
        return f"{label} must be > {meta['above']}, got {value}"
    if meta.get("below") is not None and not value < meta["below"]:
        return f"{label} must be < {meta['below']}, got {value}"
    return None


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
