"""torchrun with 2 gloo processes on CPU: the parameters equal one process on the combined batch,
and the run folder is written once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from pyro_dcim.training import epoch_permutation, shard_indices
from pyro_dcim.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--arch", "(3,2,4) 12 10", "--train-size", "256", "--val-size", "64", "--epochs", "2", "--augment", "none",
        "--device", "cpu", "--no-figures", "--objective", "bidirectional", "--lr", "0.01"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(args, nproc=1):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "pyro_dcim.fit", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "pyro_dcim.fit", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_gloo_ranks_equal_one_process_on_the_combined_batch(tmp_path):
    _fit([*ARGS, "--batch-size", "16", "--out", str(tmp_path / "ddp")], nproc=2)
    _fit([*ARGS, "--batch-size", "32", "--out", str(tmp_path / "one")])
    ddp, one = (load_checkpoint(tmp_path / name)["model"]["state_dict"] for name in ("ddp", "one"))
    for name, value in one.items():
        assert torch.allclose(ddp[name], value, atol=1e-5), name
    assert not torch.allclose(ddp["layers.0.weight"], ddp["layers.0.weight"] * 0)
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: each epoch logged once
    single = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, single):  # training metrics are reduced over ranks: the same as one process
        assert abs(a["train_acc"] - b["train_acc"]) < 1e-9 and abs(a["forward_nll"] - b["forward_nll"]) < 1e-4
    assert not list((tmp_path / "ddp").glob("*.tmp"))


def test_stride_shards_of_a_step_form_the_combined_batch():
    perm = epoch_permutation(100, seed=3, epoch=1)
    shards = [shard_indices(perm, r, 2) for r in range(2)]
    for step in range(3):
        union = torch.cat([s[step * 16:(step + 1) * 16] for s in shards])
        assert sorted(union.tolist()) == sorted(perm[step * 32:(step + 1) * 32].tolist())
