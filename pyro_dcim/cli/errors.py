"""What the command-line tools share: one-line errors and their exit statuses.

Exit status: 0 done; 1 the work failed (e.g. a non-finite loss); 2 bad input, reported in one
line on stderr before anything is done; 128 + N stopped by signal N (130 for Ctrl-C).
Standard library only: :func:`pyro_dcim.cli.launch` imports this before torch.
"""

from __future__ import annotations

import argparse
import signal
import sys

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_SIGINT", "OneLineParser", "one_line", "report",
           "report_interrupt"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT = 0, 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (and still exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (library messages may wrap)."""
    return " ".join(str(error).split())


def report(prog: str, error: BaseException | str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``prog: error: message`` (bad input) or ``prog: message`` (anything else); return ``code``."""
    label = "error: " if code == EXIT_BAD_INPUT else ""
    print(f"{prog}: {label}{one_line(error)}", file=sys.stderr)
    return code


def report_interrupt(prog: str, where: str = "", what: str = "nothing was saved", *, signum: int = signal.SIGINT,
                     fresh_line: bool = False) -> int:
    """``prog: interrupted (SIGINT) <where>; <what>``; return 128 + ``signum`` (130 for SIGINT, 143 for
    SIGTERM).  ``fresh_line``: start a new line first, where a progress bar may have left one open."""
    start, name = "\n" if fresh_line else "", signal.Signals(signum).name
    print(f"{start}{prog}: interrupted ({name}){' ' + where if where else ''}; {what}", file=sys.stderr, flush=True)
    return 128 + int(signum)
