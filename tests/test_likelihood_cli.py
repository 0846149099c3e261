"""``python -m pyro_dcim.likelihood`` on a tiny run: its numbers, files, resumes and bad-input exits; torchrun."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
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
    assert main([str(tiny_run), "--method", "ais", "--images", "6", "--steps", "200", "--chains", "32", "--bdmc",
                 "--bdmc-images", "3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "-log p(x0 | y)" in printed and "-log p(x0)" in printed and "BDMC" in printed
    summary = json.loads((out / "summary-ais.json").read_text())
    rows = list(csv_rows(out / "per_image-ais.csv"))
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
    assert summary["bdmc"]["nll_lower"] <= summary["bdmc"]["nll_upper"] + 0.5   # named as -log p


def test_importance_sampling_whole_protocol_matches_exact(tiny_run, tmp_path, capsys):
    """The default method (IS-K from the forward chain): conditional and unconditional against enumeration."""
    out = tmp_path / "is"
    assert main([str(tiny_run), "--images", "8", "--particles", "3000", "--chunk", "3", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "importance sampling, K = 3000" in printed and "dynamically binarised" in printed
    rows = list(csv_rows(out / "per_image-is-forward.csv"))
    assert [int(r["image"]) for r in rows] == list(range(8))
    net = load_model(tiny_run).double()
    x, y = load_dataset("mnist-subset", "test", binarize_mode="sample", seed=0)
    x, y = x[:8].double(), y[:8]
    _, train_y = load_dataset("mnist-subset", "train")
    log_prior = (torch.bincount(train_y, minlength=10).double() / len(train_y)).log()
    per_class = torch.stack([exact_log_likelihood(net, x, torch.full_like(y, c)) for c in range(10)], 1)
    exact_marginal = (per_class + log_prior).logsumexp(1)
    for r, c, m in zip(rows, per_class[torch.arange(8), y], exact_marginal):
        assert abs(-float(r["nll_conditional"]) - float(c)) <= 4 * float(r["stderr_conditional"]) + 0.02
        assert abs(-float(r["nll"]) - float(m)) <= 4 * float(r["stderr"]) + 0.02


def _is_args(out, *extra):
    return ["--images", "12", "--particles", "400", "--chunk", "2", "--out", str(out), "--no-progress", *extra]


def test_resume_after_kill_gives_identical_per_digit_numbers(tiny_run, tmp_path):
    """kill -9 part way, then the same command: every digit's numbers equal an unbroken run's, bit for bit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    whole = tmp_path / "whole"
    assert main([str(tiny_run), *_is_args(whole)]) == 0
    broken = tmp_path / "broken"
    cmd = [sys.executable, "-m", "pyro_dcim.likelihood", str(tiny_run), *_is_args(broken, "--particles", "20000")]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(broken.glob("is-forward-*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    saved = list(broken.glob("is-forward-*.json"))
    assert saved and len(saved) < 6, "the run should have been killed part way"
    # the interrupted run used other settings: refused, not mixed
    assert main([str(tiny_run), *_is_args(broken)]) == 2
    assert main([str(tiny_run), *_is_args(broken, "--particles", "20000")]) == 0
    again = list(csv_rows(broken / "per_image-is-forward.csv"))
    assert len(again) == 12
    redo = tmp_path / "redo"
    assert main([str(tiny_run), *_is_args(redo, "--particles", "20000", "--chunk", "5")]) == 0
    for a, b in zip(again, csv_rows(redo / "per_image-is-forward.csv")):   # another chunking: the same digits' numbers
        assert a["nll_conditional"] == b["nll_conditional"] and a["nll"] == b["nll"]
    assert len(list(csv_rows(whole / "per_image-is-forward.csv"))) == 12


def test_sigterm_saves_and_says_how_to_go_on(tiny_run, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "pyro_dcim.likelihood", str(tiny_run), *_is_args(out, "--particles", "20000")]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("is-forward-*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert "SIGTERM" in line and "saved in" in line and "the same command resumes" in line


def test_output_folder_is_checked_before_any_work(tiny_run, tmp_path, monkeypatch, capsys):
    import pyro_dcim.cli.likelihood as cli

    def no_work(*a, **k):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(cli, "load_model", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (blocker, blocker / "below"):
        assert main([str(tiny_run), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "results folder" in err and "\n" not in err


def test_settings_without_a_checkable_error_bar_say_so(tiny_run, tmp_path, capsys):
    assert main([str(tiny_run), "--method", "ais", "--images", "2", "--steps", "5", "--chains", "4",
                 "--no-unconditional", "--out", str(tmp_path / "few"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Pareto k̂ cannot be computed" in err and "BDMC" in err


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--chains", "0"], "--chains must be at least 1"),
    (["--particles", "1"], "--particles must be at least 2"),
    (["--threads", "-1"], "--threads must be 0 or more"),
    (["--images", "0"], "must be at least 1"),
    (["--images", "some"], "'all'"),
    (["--calibrate", "5", "--method", "ais"], "use it with --method is"),
    (["--images", "100000"], "more than the 2000 digits"),
])
def test_bad_arguments_exit_2_with_one_line(tiny_run, args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) if args[0] == "--images" and args[1] in ("0", "some") else nullcontext():
        assert main([str(tiny_run), *args, "--no-progress", "--out", str(tmp_path / "o")]) == 2
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
           "--particles", "50", "--chunk", "1", "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1            # rank 0 alone reports
    summary = json.loads((out / "summary-is-forward.json").read_text())
    assert summary["world_size"] == 2 and summary["images"] == 5
    assert [int(r["image"]) for r in csv_rows(out / "per_image-is-forward.csv")] == [0, 1, 2, 3, 4]


MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="needs ../shared/data/mnist")
def test_the_runs_own_dataset_is_scored(tiny_run, tmp_path):
    """A full-MNIST run is scored on the 10,000 MNIST test digits, not the bundled subset's 2,000."""
    import shutil

    run = tmp_path / "full"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["config"].update(dataset="mnist", data_dir=str(MNIST_DIR))
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "lk"
    assert main([str(run), "--images", "all", "--particles", "2", "--chunk", "2000", "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary-is-forward.json").read_text())
    assert summary["images"] == 10_000
