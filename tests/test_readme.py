"""README is a user's page that works: its Python blocks run as written on a fresh run folder,
and its test command is the one CI runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_blocks_run_in_order(tmp_path):
    """The blocks run as one script in a folder where `python -m pyro_dcim.fit --out runs/my-run`
    (the README's training command, here with a short schedule) has trained a run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    fit = subprocess.run([sys.executable, "-m", "pyro_dcim.fit", "--out", "runs/my-run", "--epochs", "1",
                          "--train-size", "500", "--no-figures"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-2000:]
    blocks = _blocks("python")
    assert len(blocks) >= 4
    script = tmp_path / "readme.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + "\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "r_hat" in done.stdout                      # the ArviZ summary printed
    # constant units' R-hat is 0/0 in ArviZ; the README's call leaves those harmless warnings out
    assert "invalid value encountered" not in done.stderr, done.stderr[-2000:]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_command():
    bash = _blocks("bash")
    assert bash[0].strip().splitlines()[-1].endswith("python -m pyro_dcim.fit")
    test_command = bash[1].strip().splitlines()[-1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == test_command
