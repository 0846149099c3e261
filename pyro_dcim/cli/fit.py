"""``python -m pyro_dcim.fit``: train a DCIM from the command line.

With no arguments: the paper's dense 784-512-512-10 network, objective (21), on the
bundled MNIST subset (8,000 training / last 2,000 as validation / 2,000 test images),
written to runs/<timestamp>-dense-bidirectional/.  Settings are merged in this
order: the defaults (pyro_dcim.training.TrainConfig), then --config FILE (or the run's
own config.json with --resume), then the options given on the command line.

Exit status: 0 done; 2 bad input (one line on stderr, nothing trained); 1 a non-finite
loss; 130 / 143 stopped by SIGINT / SIGTERM after saving (the message says how to resume).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import Field, fields
from pathlib import Path
from typing import Optional, Sequence, Union, get_args, get_origin, get_type_hints

from ..data import DataError
from ..spec import SpecError
from ..training import distributed
from ..training.checkpoint import CheckpointError
from ..training.config import GROUPS, ConfigError, TrainConfig
from ..training.loop import NonFiniteLossError, train
from ..training.runs import RunDirError, read_config
from ..training.signals import TrainingInterrupted
from .errors import EXIT_FAILED, EXIT_OK, OneLineParser, report, report_interrupt

__all__ = ["main", "build_parser", "config_from_args"]

PROG = "python -m pyro_dcim.fit"


def _optional(convert, word: str = "none"):
    def parse(text: str):
        return None if text.lower() == word else convert(text)
    parse.__name__ = convert.__name__  # argparse names the type in its error: "invalid int value"
    return parse


def _add_setting(group: argparse._ArgumentGroup, f: Field, hint) -> None:
    """The option of one :class:`TrainConfig` field, from its type and declaration."""
    meta = f.metadata
    if hint == Optional[bool]:  # a default that depends on other settings: --untie / --no-untie
        group.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                           help=meta["help"] + f" (default {meta['default_text']})")
        return
    if hint is bool:
        if meta.get("flag"):  # a True default that an option turns off
            group.add_argument(meta["flag"], dest=f.name, action="store_false", help=meta["help"])
        else:
            group.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", help=meta["help"])
        return
    optional = get_origin(hint) is Union and type(None) in get_args(hint)
    base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    shown = meta.get("default_text")
    shown = f.default if shown is None else shown
    kwargs = dict(help=meta["help"] + (f" (default {shown})" if shown != "" else ""), metavar=meta.get("metavar"))
    if meta.get("choices") is not None:
        kwargs["choices"] = list(meta["choices"])
    elif base is not str:
        kwargs["type"] = _optional(base, meta["none_word"]) if optional else base
    group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    run = groups["run"]
    run.add_argument("--config", metavar="FILE", help="read settings from a config.json (e.g. RUN_DIR/config.json "
                     "to rerun a run); options given here override it")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint, "
                     "with its config.json (options given here override it, e.g. more --epochs)")
    run.add_argument("--overwrite", action="store_true", help="replace the run files in an existing --out folder")
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        _add_setting(groups[f.metadata["group"]], f, hints[f.name])
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


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    cfg = None
    if hasattr(sys.stdout, "reconfigure"):   # a log file gets each line when it is said, not 40 minutes later
        sys.stdout.reconfigure(line_buffering=True)
    try:
        cfg, resume, overwrite = config_from_args(args)
        train(cfg, resume=resume, overwrite=overwrite)
    except (ConfigError, DataError, SpecError, RunDirError, CheckpointError) as e:
        return report(prog, e)
    except NonFiniteLossError as e:
        return report(prog, e, EXIT_FAILED)
    except TrainingInterrupted as e:
        return report(prog, e, e.exit_code)
    except KeyboardInterrupt:  # before the loop catches signals (loading data), or after it (figures)
        return report_interrupt(prog, "outside the training loop", _what_was_saved(cfg and cfg.out))
    finally:
        distributed.cleanup()  # a no-op unless launched by torchrun
    return EXIT_OK
