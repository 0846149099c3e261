"""The training loop: learning, exact resume, non-finite losses, run-folder rules."""

import dataclasses
import functools
import json
import math
import os
import signal

import pytest
import torch

from pyro_dcim import objectives
from pyro_dcim.training import (
    NonFiniteLossError,
    TrainConfig,
    TrainingInterrupted,
    epoch_permutation,
    evaluate,
    load_splits,
    shard_indices,
    train,
)
from pyro_dcim.training.checkpoint import load_checkpoint, load_model
from pyro_dcim.training.runs import RunDirError

# a small net on 1,000 subset images: about a second per run on 2 CPU cores
TINY = dict(arch="64-10", train_size=1000, val_size=500, epochs=3, batch_size=25, lr=1e-2, augment="none",
            figures=False)


def _quiet(*_):
    pass


def _without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_short_run_learns_well_above_chance(tmp_path):
    result = train(TrainConfig(**TINY, out=str(tmp_path / "run")), log=_quiet)
    last = result.history[-1]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert last["val_acc"] >= 0.80  # chance is 0.10; measured 0.86
    assert last["train_acc"] > result.history[0]["train_acc"]
    # (21) trains the reverse model: its validation loss per pixel falls below the untrained
    # net's, whose b^0 already starts at the mean image
    assert last["val_reverse_nll_per_pixel"] < result.history[0]["val_reverse_nll_per_pixel"] < 0.35
    assert math.isclose(last["val_reverse_nll_sum"], 784 * last["val_reverse_nll_per_pixel"], rel_tol=1e-6)
    assert result.summary["test_acc"] >= 0.75  # measured 0.80
    # the stored model is the trained one
    cfg = TrainConfig(**TINY)
    splits = load_splits(cfg, torch.device("cpu"))
    net = load_model(result.run_dir)
    assert evaluate(net, cfg, splits.val_x, splits.val_y).acc == pytest.approx(last["val_acc"])


def _interrupt_at_call(monkeypatch, objective: str, n: int, action):
    """Make the n-th objective evaluation of training run ``action`` (a crash or a signal)."""
    calls = {"n": 0}
    real = objectives.OBJECTIVES[objective]

    @functools.wraps(real)  # the trainer passes an objective the settings its signature names
    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            action()
        return real(*args, **kwargs)

    monkeypatch.setitem(objectives.OBJECTIVES, objective, wrapped)


@pytest.mark.parametrize("objective, how", [("bidirectional", "crash"), ("sampled-layer", "crash"),
                                            ("sampled-layer", "SIGINT"), ("bidirectional", "SIGTERM")])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, objective, how):
    """An interrupted run, resumed, ends with the same metrics and parameters as an
    uninterrupted one (CPU, fixed seed): a crash between the epoch-1 checkpoint and the
    metrics files (as kill -9 there), or SIGINT in the middle of epoch 2."""
    # 24 steps per epoch; random shifts and (22)'s samples both draw from the saved generator
    cfg = TrainConfig(**dict(TINY, arch="32-32-10", objective=objective, train_size=600, augment="shift"))
    full = train(TrainConfig(**{**vars(cfg), "out": str(tmp_path / "full")}), log=_quiet)
    part = TrainConfig(**{**vars(cfg), "out": str(tmp_path / "part")})
    with monkeypatch.context() as m:
        if how == "crash":
            from pyro_dcim.training import runs

            m.setattr(runs, "append_metrics", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
            with pytest.raises(RuntimeError, match="killed"):
                train(part, log=_quiet)
        else:
            signum = getattr(signal, how)
            _interrupt_at_call(m, objective, 24 + 1 + 10,  # 24 steps, 1 validation batch, 10 steps
                               lambda: os.kill(os.getpid(), signum))
            with pytest.raises(TrainingInterrupted) as e:
                train(part, log=_quiet)
            assert (e.value.exit_code, e.value.epoch, e.value.step) == (128 + signum, 1, 10)
            assert f"--resume {tmp_path / 'part'}" in str(e.value)
    assert load_checkpoint(tmp_path / "part")["position"] == ({"epoch": 1, "step": 0} if how == "crash"
                                                              else {"epoch": 1, "step": 10})
    resumed = train(part, resume=True, log=_quiet)
    assert _without_time(resumed.history) == _without_time(full.history)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    for name, tensor in a["model"]["state_dict"].items():
        assert torch.equal(tensor, b["model"]["state_dict"][name]), name
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert lines == (tmp_path / "full" / "metrics.jsonl").read_text().splitlines() or \
        [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = objectives.OBJECTIVES["bidirectional"]

    @functools.wraps(real)
    def poisoned(*args, **kwargs):
        calls["n"] += 1
        parts = real(*args, **kwargs)
        if calls["n"] >= 45:  # step 4 of epoch 2: 40 steps per epoch and 1 validation batch between
            parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setitem(objectives.OBJECTIVES, "bidirectional", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 4"):
        train(TrainConfig(**TINY, out=str(tmp_path / "run")), log=_quiet)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["position"] == {"epoch": 1, "step": 0}
    assert all(torch.isfinite(t).all() for t in ckpt["model"]["state_dict"].values())


def test_run_folder_holding_a_run_is_refused(tmp_path):
    out = str(tmp_path / "run")
    train(TrainConfig(**dict(TINY, epochs=1), out=out), log=_quiet)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(TrainConfig(**dict(TINY, epochs=1), out=out), log=_quiet)
    again = train(TrainConfig(**dict(TINY, epochs=1), out=out), overwrite=True, log=_quiet)
    assert len(again.history) == 1


def test_data_order_is_a_seeded_permutation_sharded_by_rank():
    perm = epoch_permutation(10, seed=3, epoch=2)
    assert torch.equal(perm, epoch_permutation(10, seed=3, epoch=2))
    assert not torch.equal(perm, epoch_permutation(10, seed=3, epoch=3))
    assert sorted(perm.tolist()) == list(range(10))
    shards = [shard_indices(perm, r, 3) for r in range(3)]
    assert all(len(s) == 3 for s in shards)
    assert len(set(torch.cat(shards).tolist())) == 9


@pytest.mark.cuda
def test_cuda_run_learns_and_resumes(tmp_path):
    """The same loop on a GPU: data, generator and checkpoint all follow the device."""
    cfg = dict(TINY, arch="32-32-10", objective="sampled-layer", device="cuda", augment="shift")
    full = train(TrainConfig(**cfg, out=str(tmp_path / "full")), log=_quiet)
    assert full.history[-1]["val_acc"] >= 0.75
    assert next(full.net.parameters()).is_cuda
    train(TrainConfig(**dict(cfg, epochs=3), out=str(tmp_path / "part")), log=_quiet)
    resumed = train(TrainConfig(**dict(cfg, epochs=5), out=str(tmp_path / "part")), resume=True, log=_quiet)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert load_model(tmp_path / "part").num_classes == 10


def test_train_leaves_its_config_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # out=None: the run goes to runs/<timestamp>-... here
    cfg = TrainConfig(**dict(TINY, epochs=1))
    before = dataclasses.asdict(cfg)
    result = train(cfg, log=_quiet)
    assert dataclasses.asdict(cfg) == before and cfg.out is None
    assert result.config.out is not None and result.run_dir.resolve() == (tmp_path / result.config.out).resolve()
    assert json.loads((result.run_dir / "config.json").read_text())["config"]["out"] == result.config.out
