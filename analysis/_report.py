"""Shared plumbing of the analysis scripts: Markdown tables, the machine note, loading runs.

Presentation and orchestration only; every number is computed by :mod:`pyro_dcim`.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# the scripts run as ``python analysis/x.py`` from the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pyro_dcim import DCIM, load_model  # noqa: E402
from pyro_dcim.data import load_dataset  # noqa: E402
from pyro_dcim.training.runs import CONFIG_NAME, read_config  # noqa: E402

#: The committed results; scripts write here only when asked (``--out analysis/results``).
RESULTS = Path(__file__).resolve().parent / "results"
#: Where the scripts write by default: untracked, so a trial run never replaces a published table.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "out" / "analysis"


def machine_note(threads: int) -> str:
    """One line on where the timings come from and why they are noisy."""
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
            f"jobs, torch {torch.__version__} on CPU with {threads} thread(s); timings are wall-clock and noisy "
            "(other processes ran at the same time), so read them to a factor of about two.")


def fmt(value: Any, digits: int = 4) -> str:
    """Floats to ``digits`` significant digits; ``None`` and NaN as a dash."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A Markdown table; pipes inside cells (``p(x | y)``) are escaped."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header)]
    lines += [line([fmt(v, digits) for v in row]) for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, title: str, sections: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n")
    print(f"wrote {path}")
    return path


def command_line() -> str:
    return "`python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) + "`"


@dataclass
class Run:
    """A trained run folder: its model, name, objective and dataset."""

    path: Path
    net: DCIM
    objective: str
    dataset: str
    data_dir: str | None

    @property
    def label(self) -> str:
        return f"{self.objective} ({self.path.name})"

    def test_data(self, images: int, binarize_mode: str = "none", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``images`` test digits of the run's dataset, in the model's dtype."""
        x, y = load_dataset(self.dataset, "test", self.data_dir, binarize_mode=binarize_mode, seed=seed)
        return x[:images].to(self.net.input_bias), y[:images]


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    config = read_config(path) if (path / CONFIG_NAME).is_file() else {}
    net = load_model(path).eval()
    return Run(path, net, str(config.get("objective", path.name)), str(config.get("dataset", "mnist-subset")),
               config.get("data_dir"))
