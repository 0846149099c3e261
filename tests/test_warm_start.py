"""Options of the tied runs (issue 24 §3): a discriminative warm start and a ramped reverse weight
(``--warm-start-epochs``, ``--ramp-epochs``), and the AP2 pass in reweighted wake-sleep's class term."""

import functools
import os
import signal

import pytest
import torch
from test_train import _interrupt_at_call, _quiet, _without_time

from pyro_dcim import objectives
from pyro_dcim.training import ConfigError, TrainConfig, TrainingInterrupted, train
from pyro_dcim.training.checkpoint import load_checkpoint
from pyro_dcim.training.loop import reverse_weight_at

# 24 steps per epoch on 600 subset images; rws draws particles from the saved generator
SMALL = dict(arch="32-32-10", objective="rws", train_size=600, val_size=200, epochs=3, batch_size=25, lr=1e-2,
             augment="none", figures=False)


def test_the_schedule_is_zero_then_linear_then_the_reverse_weight():
    cfg = TrainConfig(objective="rws", reverse_weight=2.0, warm_start_epochs=1.0, ramp_epochs=2.0)
    assert [reverse_weight_at(cfg, t) for t in (0.0, 0.5, 0.999)] == [0.0, 0.0, 0.0]
    assert reverse_weight_at(cfg, 1.0) == 0.0
    assert reverse_weight_at(cfg, 2.0) == pytest.approx(1.0)
    assert reverse_weight_at(cfg, 2.5) == pytest.approx(1.5)
    assert reverse_weight_at(cfg, 3.0) == 2.0 and reverse_weight_at(cfg, 9.0) == 2.0
    plain = TrainConfig(objective="rws", reverse_weight=2.0)
    assert reverse_weight_at(plain, 0.0) == 2.0


def test_during_the_warm_start_the_reverse_only_parameters_do_not_move(tmp_path):
    """Tied, only the image bias b^0 is the reverse model's alone: the class term never touches it."""
    start = train(TrainConfig(**dict(SMALL, epochs=0, out=str(tmp_path / "init"))), log=_quiet)
    warm = train(TrainConfig(**dict(SMALL, warm_start_epochs=3, out=str(tmp_path / "warm"))), log=_quiet)
    plain = train(TrainConfig(**dict(SMALL, out=str(tmp_path / "plain"))), log=_quiet)
    b0 = start.net.input_bias.detach()
    assert torch.equal(warm.net.input_bias.detach(), b0)
    assert not torch.equal(plain.net.input_bias.detach(), b0)
    assert not torch.equal(warm.net.layers[0].weight.detach(), start.net.layers[0].weight.detach())
    # a warm start past the end is discriminative learning: it classifies at least as well here
    assert warm.history[-1]["val_acc"] >= plain.history[-1]["val_acc"] - 0.05


def test_a_ramped_run_resumed_after_sigint_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    cfg = dict(SMALL, warm_start_epochs=0.5, ramp_epochs=1.5)
    full = train(TrainConfig(**dict(cfg, out=str(tmp_path / "full"))), log=_quiet)
    part = TrainConfig(**dict(cfg, out=str(tmp_path / "part")))
    with monkeypatch.context() as m:
        _interrupt_at_call(m, "rws", 24 + 1 + 10, lambda: os.kill(os.getpid(), signal.SIGINT))  # epoch 2, step 10
        with pytest.raises(TrainingInterrupted):
            train(part, log=_quiet)
    assert load_checkpoint(tmp_path / "part")["position"] == {"epoch": 1, "step": 10}
    resumed = train(part, resume=True, log=_quiet)
    assert _without_time(resumed.history) == _without_time(full.history)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    for name, tensor in a["model"]["state_dict"].items():
        assert torch.equal(tensor, b["model"]["state_dict"][name]), name


def test_the_objective_sees_the_ramped_weight(tmp_path, monkeypatch):
    seen = []
    real = objectives.OBJECTIVES["rws"]

    @functools.wraps(real)  # the trainer passes the settings its signature names
    def spy(*args, **kwargs):
        if torch.is_grad_enabled():  # training steps, not the evaluation passes
            seen.append(kwargs["reverse_weight"])
        return real(*args, **kwargs)

    monkeypatch.setitem(objectives.OBJECTIVES, "rws", spy)
    train(TrainConfig(**dict(SMALL, epochs=2, warm_start_epochs=0.5, ramp_epochs=1.0, reverse_weight=2.0,
                             out=str(tmp_path / "run"))), log=_quiet)
    assert len(seen) == 48
    assert seen[:12] == [0.0] * 12                                      # the first half epoch
    assert seen[12] == 0.0 and 0 < seen[13] < seen[30] < 2.0            # rising over one epoch
    assert seen[36:] == [2.0] * 12                                      # then the full weight
    assert seen[24] == pytest.approx(2.0 * 0.5)


@pytest.mark.parametrize("extra, message", [
    (dict(objective="discriminative", warm_start_epochs=1), "discriminative"),
    (dict(objective="rws", ramp_epochs=1, compile=True), "--compile"),
])
def test_settings_that_cannot_ramp_are_refused_before_training(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        train(TrainConfig(**dict(SMALL, **extra, out=str(tmp_path / "run"))), log=_quiet)
    assert not (tmp_path / "run").exists()


def test_negative_epochs_are_refused():
    with pytest.raises(ConfigError, match="warm start epochs"):
        TrainConfig(objective="rws", warm_start_epochs=-1).validate()


def test_rws_class_term_can_use_the_ap2_pass():
    torch.manual_seed(0)
    from pyro_dcim import DCIM

    net = DCIM.from_spec([12, 8, 10], input_shape=(1, 28, 28))
    x0 = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    y = torch.arange(6)
    ap2 = objectives.reweighted_wake_sleep_loss(net, x0, y, particles=3, approximation="ap2",
                                                generator=torch.Generator().manual_seed(1))
    first = objectives.reweighted_wake_sleep_loss(net, x0, y, particles=3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ap2.logits, net.forward_mean_field(x0, approximation="ap2").logits)
    assert not torch.allclose(ap2.logits, first.logits)
    assert torch.equal(ap2.reverse_nll_sum, first.reverse_nll_sum)      # the same particles either way
