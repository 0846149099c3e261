"""The speed options of the training loop: bf16 autocast and torch.compile."""

import math

import pytest

from pyro_dcim.training import train
from pyro_dcim.training.config import ConfigError, TrainConfig

TINY = dict(arch="32-10", train_size=400, val_size=200, epochs=2, batch_size=50, lr=5e-3, figures=False,
            device="cpu")


def test_bf16_autocast_trains_like_fp32(tmp_path):
    fp32 = train(TrainConfig(**TINY, out=str(tmp_path / "fp32")), log=lambda *a: None)
    bf16 = train(TrainConfig(**TINY, amp="bf16", out=str(tmp_path / "amp")), log=lambda *a: None)
    assert all(math.isfinite(r["loss"]) for r in bf16.history)
    assert bf16.history[-1]["loss"] < bf16.history[0]["loss"]
    assert abs(bf16.summary["val_acc"] - fp32.summary["val_acc"]) < 0.05
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig(amp="fp8").validate()


@pytest.mark.slow
def test_compiled_step_matches_eager(tmp_path):
    eager = train(TrainConfig(**TINY, out=str(tmp_path / "eager")), log=lambda *a: None)
    compiled = train(TrainConfig(**TINY, compile=True, out=str(tmp_path / "compiled")), log=lambda *a: None)
    for a, b in zip(eager.history, compiled.history):
        assert abs(a["val_acc"] - b["val_acc"]) < 0.02 and abs(a["loss"] - b["loss"]) < 1e-3
