"""``python -m pyro_dcim.likelihood`` on a tiny run: its numbers, files and bad-input exits; torchrun."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_dcim import load_model
from pyro_dcim.cli.likelihood import main
from pyro_dcim.data import load_dataset
from pyro_dcim.inference import exact_log_likelihood

ROOT = Path(__file__).resolve().parents[1]
FIT = ["--arch", "6 10", "--train-size", "300", "--val-size", "50", "--epochs", "1", "--augment", "none",
       "--device", "cpu", "--no-figures"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "pyro_dcim.fit", *FIT, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_cli_estimates_match_exact_enumeration(tiny_run, tmp_path, capsys):
    """A 6-unit hidden layer is enumerable: every image's AIS estimate is within 4 s.e. of exact."""
    out = tmp_path / "lk"
    assert main([str(tiny_run), "--images", "6", "--steps", "200", "--chains", "32", "--bdmc", "--bdmc-images", "3",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "-log p(x0 | y)" in printed and "-log p(x0)" in printed and "BDMC" in printed
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv_rows(out / "per_image.csv"))
    assert summary["images"] == 6 and len(rows) == 6 and summary["khat"]["computed"] == 6
    net = load_model(tiny_run)
    x, y = load_dataset("mnist-subset", "test", binarize_mode="sample", seed=0)
    exact = exact_log_likelihood(net.double(), x[:6].double(), y[:6])
    _, train_y = load_dataset("mnist-subset", "train")
    log_prior = (torch.bincount(train_y, minlength=10).double() / len(train_y)).log()
    for r, e in zip(rows, exact):
        se = float(r["stderr_conditional"])
        assert abs(-float(r["nll_conditional"]) - float(e)) <= 4 * se + 0.05
        # p(x0) = Σ_y p(x0 | y) p(y) ≥ p(x0 | label) p(label)
        assert float(r["nll"]) <= float(r["nll_conditional"]) - float(log_prior[int(r["label"])]) + 4 * se + 0.05
    assert summary["bdmc"]["gap_mean"] < 1.0


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--chains", "0"], "--chains must be at least 1"),
    (["--images", "100000"], "more than the 2000 digits"),
])
def test_bad_arguments_exit_2_with_one_line(tiny_run, args, message, capsys):
    assert main([str(tiny_run), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_folder_without_a_run_exits_2(tmp_path, capsys):
    assert main([str(tmp_path), "--no-progress"]) == 2
    assert "holds no run" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_splits_images_and_rank_0_gathers(tiny_run, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "pyro_dcim.likelihood", str(tiny_run), "--images", "5",
           "--steps", "5", "--chains", "4", "--no-unconditional", "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("-log p(x0 | y)") == 1            # rank 0 alone reports
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["images"] == 5
    assert [int(r["image"]) for r in csv_rows(out / "per_image.csv")] == [0, 1, 2, 3, 4]
