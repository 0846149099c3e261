"""``python -m pyro_dcim.fit``: train a DCIM from the command line.

With no arguments: the paper's dense 784-512-512-10 network, objective (21), on the
bundled MNIST subset (8,000 training / last 2,000 as validation / 2,000 test images),
written to runs/<timestamp>-dense-bidirectional/.  Settings are merged in this
order: the defaults (pyro_dcim.train.TrainConfig), then --config FILE (or the run's
own config.json with --resume), then the options given on the command line.

Exit status: 0 done; 2 bad input (one line on stderr, nothing trained); 1 a non-finite
loss; 130 / 143 stopped by SIGINT / SIGTERM after saving (the message says how to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import distributed
from .allocator import keep_freed_memory
from .approximations import APPROXIMATIONS
from .checkpoint import CheckpointError
from .data import DATASETS, DataError
from .init import INIT_SCHEMES
from .objectives import GENERATIVE, OBJECTIVES
from .runs import RunDirError, read_config
from .spec import SpecError
from .train import OPTIMIZERS, ConfigError, NonFiniteLossError, TrainConfig, TrainingInterrupted, train

__all__ = ["main", "build_parser", "config_from_args"]

D = TrainConfig()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (and still exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() == "none" else int(text)


def _optional_float(text: str) -> Optional[float]:
    return None if text.lower() == "none" else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m pyro_dcim.fit", description=__doc__.split("\n\n")[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    run = p.add_argument_group("run")
    run.add_argument("--config", metavar="FILE", help="read settings from a config.json (e.g. RUN_DIR/config.json "
                     "to rerun a run); options given here override it")
    run.add_argument("--out", metavar="DIR", help="the run folder (default runs/<timestamp>-<arch>-<objective>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint, "
                     "with its config.json (options given here override it, e.g. more --epochs)")
    run.add_argument("--overwrite", action="store_true", help="replace the run files in an existing --out folder")
    run.add_argument("--device", help=f"auto | cpu | cuda | cuda:N (default {D.device}: CUDA when available)")
    run.add_argument("--threads", type=int, help="CPU threads for PyTorch; 0 = all cores (default 1: on "
                     "shared cores more threads can be many times slower)")
    run.add_argument("--compile", action="store_true", help="torch.compile the training step's "
                     "loss (see README, Speed: measured, off by default)")
    run.add_argument("--amp", choices=["none", "bf16"], help="mixed precision: autocast the training step to "
                     "bfloat16 (default none)")
    run.add_argument("--seed", type=int, help=f"seeds weights, data order and samples (default {D.seed})")
    run.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")

    model = p.add_argument_group("model and objective")
    model.add_argument("--arch", help="dense (784-512-512-10) | cnn (the paper's 8-layer CNN) | a spec in the "
                       "paper's notation, e.g. '(3,1,32) (2,2,32) 50 10' or '512-512-10' (default dense)")
    model.add_argument("--units", choices=["01", "pm1"], help="binary units {0,1} with sigmoid (eq. 6-7) or "
                       "{-1,+1} with tanh (eq. 8-9) (default 01)")
    model.add_argument("--objective", choices=list(OBJECTIVES), help="discriminative: cross-entropy only; "
                       "bidirectional: eq. (21); sampled-layer: eq. (22); rws: tied reweighted wake-sleep "
                       "(K particles); wake-sleep: wake-theta + sleep-phi; generative: the best generator "
                       f"({GENERATIVE}) (default bidirectional)")
    model.add_argument("--approximation", choices=list(APPROXIMATIONS), help="the passes that approximate "
                       "p(x^n|x^0) and p(x^0|.): first-order (eq. 2, the DNN), ap2 (means and variances) or "
                       "variational (mean-field lower bounds; slow) (default first-order)")
    model.add_argument("--reverse-weight", type=float, help=f"weight of the reverse term -log p(x^0|.) "
                       f"(default {D.reverse_weight:g}; 1 is the paper's unweighted sum (21))")
    model.add_argument("--reverse-reduction", choices=["mean", "sum"], help="reverse term as binary "
                       "cross-entropy per pixel (mean, the paper's number) or summed over pixels (default mean)")
    model.add_argument("--sample-layer", type=_optional_int, metavar="K", help="the layer x^K sampled by "
                       "objective (22) (default n-1, the layer below the class)")
    model.add_argument("--init", choices=list(INIT_SCHEMES), help="initial weights: data (scale each W^k and "
                       "set b^k so pre-activations are centred with a set spread on a training batch; the deep "
                       "{0,1} CNN needs it), torch (PyTorch's default), glorot (Glorot uniform, zero biases) or "
                       "glorot-sigmoid (Glorot x4) (default data)")
    model.add_argument("--code-weight", type=float, help="with sampled-layer: also train the class-to-code link "
                       "p(x^{n-1} | class) on the sampled codes, with this weight (helps class-conditional "
                       "generation; default 0, the paper's (22))")
    model.add_argument("--particles", type=int, metavar="K", help=f"rws / wake-sleep: particles h ~ q(h | x^0) "
                       f"per image (default {D.particles})")
    model.add_argument("--wake-phi-weight", type=_optional_float, metavar="W", help="rws / wake-sleep: weight of "
                       "the wake-phi gradient (default: rws 1, wake-sleep 0)")
    model.add_argument("--sleep-weight", type=_optional_float, metavar="W", help="rws / wake-sleep: weight of "
                       "the sleep-phi gradient on dreams of the reverse model (default: rws 0, wake-sleep 1)")
    model.add_argument("--untie", action="store_true", help="ablation: separate forward and reverse weights "
                       "(same architecture, biases shared), initialised equal")
    model.add_argument("--init-input-bias", choices=["mean-image", "zero"], help="initialise b^0 to the logit "
                       "of the mean training image, or to 0 (default mean-image)")

    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=list(DATASETS), help="mnist-subset: bundled 10k+2k MNIST digits, "
                      "offline; mnist / fashion-mnist: IDX files in --data-dir (default mnist-subset)")
    data.add_argument("--data-dir", metavar="DIR", help="folder with the four IDX files (.gz or not) or "
                      "torchvision's MNIST/raw layout")
    data.add_argument("--download", action="store_true", help="download the dataset with torchvision into "
                      "--data-dir (needs internet; never attempted otherwise)")
    data.add_argument("--binarize", choices=["none", "threshold", "sample", "dynamic"], help="use intensities as soft "
                      "targets, threshold at 0.5, draw one Bernoulli sample per pixel once (sample) or at every "
                      "step (dynamic) (default none)")
    data.add_argument("--augment", choices=["shift", "none"], help="shift: translate each training image by "
                      "up to ±1 pixel at random (about +2 points of accuracy on the subset; not in the paper); "
                      "none (default shift)")
    data.add_argument("--val-size", type=_optional_int, metavar="N", help="validation = the last N training "
                      "images (default: 10,000 for MNIST/Fashion-MNIST, 2,000 for the subset)")
    data.add_argument("--train-size", type=_optional_int, metavar="N", help="train on the first N of the "
                      "remaining training images only (default all)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, help=f"number of epochs (default {D.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"images per step (default {D.batch_size})")
    opt.add_argument("--eval-batch-size", type=int, help=f"images per evaluation batch (default {D.eval_batch_size})")
    opt.add_argument("--lr", type=float, help="learning rate (default 5e-3 for --units 01, 1.25e-3 for pm1, "
                     "the same step in the equivalent {0,1} weights)")
    opt.add_argument("--lr-schedule", choices=["constant", "cosine"], help="constant, or cosine decay to 0 "
                     "over the run (default cosine)")
    opt.add_argument("--optimizer", choices=list(OPTIMIZERS), help="adam, adamw, sgd (momentum 0.9) or "
                     "rmsprop (default adam)")
    opt.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0: the paper uses no regulariser)")
    opt.add_argument("--grad-clip", type=_optional_float, metavar="NORM", help="clip the global gradient norm "
                     "to NORM (default: no clipping)")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool, bool]:
    """Merge defaults, ``--config`` / the resumed run's config, and explicit options."""
    given = vars(args).copy()
    resume_dir = given.pop("resume", None)
    overwrite = given.pop("overwrite", False)
    config_file = given.pop("config", None)
    settings = TrainConfig.defaults()
    if resume_dir is not None:
        if not (Path(resume_dir) / "config.json").is_file():
            raise RunDirError(f"cannot resume {resume_dir}: it holds no config.json, so it is not a run folder")
        settings.update(read_config(resume_dir))
        settings["out"] = resume_dir
    if config_file is not None:
        settings.update(read_config(config_file))
        if resume_dir is None and "out" not in given:
            settings["out"] = None  # a rerun goes to a new folder unless --out says otherwise
    settings.update(given)
    return TrainConfig.from_dict(settings), resume_dir is not None, overwrite


def _what_was_saved(run_dir: Optional[str]) -> str:
    if run_dir is not None and (Path(run_dir) / "checkpoint.pt").is_file():
        return f"resume with: python -m pyro_dcim.fit --resume {run_dir}"
    return "nothing was saved"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = None
    try:
        cfg, resume, overwrite = config_from_args(args)
        train(cfg, resume=resume, overwrite=overwrite)
    except (ConfigError, DataError, SpecError, RunDirError, CheckpointError) as e:
        print(f"{parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"{parser.prog}: {_one_line(e)}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before the loop catches signals (loading data), or after it (figures)
        print(f"{parser.prog}: interrupted (SIGINT) outside the training loop; {_what_was_saved(cfg and cfg.out)}",
              file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()  # a no-op unless launched by torchrun
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # process-wide, so only when run as a program
    sys.exit(main())
