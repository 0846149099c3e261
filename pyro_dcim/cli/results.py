"""A results folder that long commands write as they go and resume from.

Work is cut into numbered chunks (a few digits each); each finished chunk is one small JSON file,
written atomically, so Ctrl-C, SIGTERM or ``kill -9`` lose at most the chunk in progress and the
same command carries on where it stopped.  ``settings-<kind>.json`` records what the results
were computed with; a folder holding results of other settings is refused rather than mixed.  Under
torchrun every rank writes its own chunks into the same folder, and any world size resumes any.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..training.atomic import atomic_write, remove_stale_temporaries
from ..training.config import ConfigError
from .output import prepare_output_dir

__all__ = ["ResultFolder"]

class ResultFolder:
    """Chunk files ``<kind>-<first>-<last>.json`` in ``out``, each the rows of a run of digits.

    Rows are keyed by ``"image"``; a digit's numbers depend only on the settings and its own index
    (each digit has its own random stream), so another chunking or world size resumes the same work.
    ``settings``: what every kind of result depends on; :meth:`check` adds what one kind depends on.
    """

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.out = prepare_output_dir(out, what="results folder")
        self.check("common", settings)

    def check(self, kind: str, settings: dict[str, Any]) -> None:
        """Refuse a folder whose ``kind`` results were computed with other settings; record them otherwise."""
        path = self.out / f"settings-{kind}.json"
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{path} is unreadable ({e}); remove it or choose another --out") from None
            differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if differ:
                raise ConfigError(f"{self.out} holds {kind} results of other settings (differing: "
                                  f"{', '.join(differ)}); choose another --out, or delete the folder to start again")
        elif int(os.environ.get("RANK", 0)) == 0:
            atomic_write(path, lambda f: f.write((json.dumps(settings, indent=2) + "\n").encode()))

    def _path(self, kind: str, images: list[int]) -> Path:
        return self.out / f"{kind}-{images[0]:06d}-{images[-1]:06d}.json"

    def done(self, kind: str) -> dict[int, dict]:
        """The finished rows of ``kind`` by image (a torn or foreign file is ignored and redone)."""
        found: dict[int, dict] = {}
        for path in sorted(self.out.glob(f"{kind}-*-*.json")):
            try:
                found.update((int(row["image"]), row) for row in json.loads(path.read_text()))
            except (ValueError, OSError, KeyError, TypeError):
                continue
        return found

    def save(self, kind: str, rows: list[dict]) -> None:
        path = self._path(kind, [r["image"] for r in rows])
        remove_stale_temporaries(path)
        atomic_write(path, lambda f: f.write(json.dumps(rows).encode()))

    def rows(self, kind: str, images: Iterable[int]) -> list[dict]:
        """The rows of ``images`` in their order (each must be done)."""
        done = self.done(kind)
        return [done[i] for i in images]

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write(self.out / name, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))

    def write_csv(self, name: str, rows: Iterable[dict]) -> Path:
        import csv
        import io

        rows = list(rows)
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return atomic_write(self.out / name, lambda f: f.write(buf.getvalue().encode()))
