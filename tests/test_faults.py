"""Faults lose nothing: kill -9 during training or during a checkpoint save, then resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _paused_fit as paused_fit
import pytest
import torch

from pyro_dcim.training import TrainConfig, train
from pyro_dcim.training.checkpoint import load_checkpoint
from pyro_dcim.training.runs import prepare_run_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
FIT = ["--arch", "64-32-10", "--train-size", "2000", "--val-size", "200", "--epochs", "6", "--batch-size", "50",
       "--device", "cpu", "--no-figures", "--objective", "sampled-layer"]


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_kill_9_during_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run([sys.executable, "-m", "pyro_dcim.fit", *FIT, "--out", str(full)], env=ENV, check=True,
                   capture_output=True, timeout=900, cwd=ROOT)
    # the run holds still in the middle of its third epoch (of six), where the kill lands
    proc = paused_fit.start([*FIT, "--out", str(part)], pause_at=0.42, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    paused_fit.wait_until_paused(proc)
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = load_checkpoint(part)["position"]["epoch"]
    assert 2 <= epoch < 6
    subprocess.run([sys.executable, "-m", "pyro_dcim.fit", "--resume", str(part)], env=ENV, check=True,
                   capture_output=True, timeout=900, cwd=ROOT)
    assert _rows(part) == _rows(full)
    a, b = (load_checkpoint(r)["model"]["state_dict"] for r in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)


_SAVER = """
import sys, torch
from pyro_dcim.training.checkpoint import save_checkpoint
path, version = sys.argv[1], 1
while True:  # keep overwriting the checkpoint with consistent versions until killed
    save_checkpoint(path, {"model": {}, "version": version, "payload": torch.full((4_000_000,), float(version))})
    if version == 1:
        print("saving", flush=True)
    version += 1
"""


def test_kill_9_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "version": 0, "payload": torch.zeros(4_000_000)}, path)
    seen = set()
    for delay in (0.0, 0.03, 0.07, 0.11, 0.17):  # a 16 MB save takes tens of ms: kills land mid-write
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], env=ENV, cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "saving"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # never a torn file: the old or a complete new version
        assert torch.all(ckpt["payload"] == ckpt["version"])
        seen.add(ckpt["version"])
    assert seen != {0}  # saves did happen between the kills


def test_same_seed_same_metrics_and_checkpoint(tmp_path):
    cfg = dict(arch="32-16-10", dataset="mnist-subset", train_size=500, val_size=100, epochs=2, batch_size=50,
               device="cpu", figures=False, objective="sampled-layer")
    runs = [train(TrainConfig(**cfg, out=str(tmp_path / name)), log=lambda *a: None) for name in ("a", "b")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in runs[0].history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in runs[1].history]
    a, b = (load_checkpoint(tmp_path / n)["model"]["state_dict"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["resume", "overwrite"])
def test_starting_a_run_removes_what_killed_saves_left_behind(tmp_path, mode):
    torch.save({"model": {}}, tmp_path / "checkpoint.pt")
    left = [tmp_path / ".checkpoint.pt.k2x9q1.tmp", tmp_path / ".metrics.jsonl.a8b7c6.tmp"]
    kept = [tmp_path / ".notes.txt.z1.tmp", tmp_path / "checkpoint.pt.tmp", tmp_path / "mine.tmp"]
    for path in left + kept:
        path.write_bytes(b"\0" * 1024)
    prepare_run_dir(tmp_path, resume=mode == "resume", overwrite=mode == "overwrite")
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)
