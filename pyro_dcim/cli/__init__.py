"""The command-line tools, one module each: ``fit`` (train), ``draw`` (generated digits),
``diagnose`` (Gibbs and ArviZ on a trained net), ``likelihood`` (AIS) and ``convert`` (trusted
files of older versions to the plain data that loads safely), run as ``python -m pyro_dcim.<command>``;
:mod:`.errors` holds what they share.

This package imports nothing heavy, so :func:`launch` can catch a Ctrl-C while torch loads.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import NoReturn

from .errors import report_interrupt

__all__ = ["COMMANDS", "launch"]

#: ``python -m pyro_dcim.<name>`` -> the module in this package that implements it
COMMANDS = {"fit": "fit", "sample": "draw", "draw": "draw", "diagnose": "diagnose", "likelihood": "likelihood",
            "convert": "convert"}


def launch(command: str) -> NoReturn:
    """Run ``python -m pyro_dcim.<command>`` and exit with its status.

    A Ctrl-C before the command's own handling is in place (while torch and Pyro import, a second
    or two) is one line and exit status 130, not a traceback.
    """
    prog = f"python -m pyro_dcim.{command}"
    module = None
    try:
        module = importlib.import_module(f"{__name__}.{COMMANDS[command]}")
        from ..allocator import keep_freed_memory

        keep_freed_memory()  # process-wide, so only when run as a program
        code = module.main(prog=prog)
    except KeyboardInterrupt as e:   # a command's own Stopped (SIGTERM too) carries its signal
        code = report_interrupt(prog, "while starting" if module is None else "",
                                signum=getattr(e, "signum", signal.SIGINT))
    sys.exit(code)
