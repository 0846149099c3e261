"""A learned ``p(x^n)`` (``DCIM(class_prior="learned")``, ``fit --class-prior learned``): the unlabelled images'
likelihood and the labelled classes teach it, checkpoints carry it, and every caller that scores the joint
(the objective, Pyro's model, importance sampling, BDMC's simulator, the likelihood command) uses it."""

import json
import math

import pytest
import torch
from _brute_force import single_thread  # noqa: F401
from pyro.infer.importance import vectorized_importance_weights

from pyro_dcim import DCIM
from pyro_dcim.inference.bdmc import simulate
from pyro_dcim.inference.energy import ChainEnergy
from pyro_dcim.inference.importance_weighted import importance_log_weights
from pyro_dcim.objectives import reweighted_wake_sleep_loss, sleep_dreams
from pyro_dcim.semi_supervised import UNLABELLED, mixed_particles
from pyro_dcim.training import ConfigError, TrainConfig, train
from pyro_dcim.training.checkpoint import CheckpointError, load_model, model_from_state, model_state

PRIOR = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)


def _quiet(*_):
    pass


@pytest.fixture
def net():
    """A tiny learned-prior net whose ``p(c)`` is far from uniform."""
    torch.manual_seed(4)
    net = DCIM.from_spec([4, 3, 3], input_shape=(6,), class_prior="learned").double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 1.0)
        net.class_prior_logits.copy_(PRIOR.log() + 0.3)       # softmax drops the shift
    return net


def _exact(net, x0):
    """``log p(x^0, c)`` ``(batch, C)`` by summing every hidden state, from the chain's own terms and ``PRIOR``."""
    states = [torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * m) for m in (4, 3)]
    h1, h2 = (s.reshape(len(s), -1) for s in states)
    bits = {1: h1.repeat_interleave(len(h2), 0), 2: h2.repeat(len(h1), 1)}
    bits = {k: b[:, None].expand(-1, len(x0), -1) for k, b in bits.items()}
    per_class = [ChainEnergy(net, x0, torch.full((len(x0),), c)).terms(bits, ("reverse", "reverse_end"))
                 for c in range(3)]
    joint = torch.stack([(t["reverse"] + t["reverse_end"]).logsumexp(0) for t in per_class], -1) + PRIOR.log()
    return joint.detach()


def test_the_prior_is_a_parameter_only_when_learned():
    uniform = DCIM.from_spec([4, 3], input_shape=(6,))
    assert uniform.class_prior == "uniform" and uniform.class_prior_logits is None
    assert torch.allclose(uniform.class_log_prior().exp(), torch.full((3,), 1 / 3))
    assert "class_prior_logits" not in uniform.state_dict()          # old checkpoints keep loading
    learned = DCIM.from_spec([4, 3], input_shape=(6,), class_prior="learned")
    assert learned.class_prior == "learned" and "class_prior" in repr(learned)
    assert torch.allclose(learned.class_prior_probs(), torch.full((3,), 1 / 3))   # starts uniform
    assert any(p is learned.class_prior_logits for p in learned.parameters())
    with pytest.raises(ValueError, match="class_prior must be one of uniform, learned"):
        DCIM.from_spec([4, 3], input_shape=(6,), class_prior="frequencies")


def test_checkpoints_carry_the_learned_prior(net):
    back = model_from_state(model_state(net))
    assert back.class_prior == "learned"
    assert torch.allclose(back.class_prior_probs().double(), PRIOR)
    old = model_state(DCIM.from_spec([4, 3], input_shape=(6,)))
    del old["class_prior"]                                             # written before the setting existed
    assert model_from_state(old).class_prior == "uniform"
    bad = model_state(net)
    bad["class_prior"] = "uniform"                                     # the logits then fit no parameter
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_state(bad)


def test_unlabelled_bound_and_posterior_use_the_learned_prior(net, single_thread):  # noqa: F811
    g = torch.Generator().manual_seed(0)
    x0 = torch.bernoulli(torch.full((3, 6), 0.5, dtype=torch.float64), generator=g)
    joint = _exact(net, x0)
    with torch.no_grad():
        many = mixed_particles(net, x0, torch.full((3,), UNLABELLED), 40000, "sum", g)
    assert torch.allclose(many.log_w.logsumexp(0) - math.log(40000), joint.logsumexp(-1), atol=0.02)
    assert torch.allclose(many.posterior, torch.softmax(joint, -1), atol=0.02)
    # uniform weights would miss it: the prior is what moves these numbers
    uniform = joint - PRIOR.log() - math.log(3)
    assert (torch.softmax(uniform, -1) - torch.softmax(joint, -1)).abs().max() > 0.1
    # importance sampling and the Pyro model read the same p(c)
    _, log_prior = importance_log_weights(net, x0, 4, generator=g)
    assert torch.allclose(log_prior, PRIOR.log())
    with torch.no_grad():
        log_w, _, _ = vectorized_importance_weights(net.generative_model, net.forward_chain_guide, x0[:1],
                                                    torch.tensor([UNLABELLED]), num_samples=100000,
                                                    max_plate_nesting=1)
    w = torch.softmax(log_w, 0)
    estimate = log_w.logsumexp(0) - math.log(len(log_w))
    assert abs(float(estimate - joint[0].logsumexp(0))) < 5 * math.sqrt(float((w ** 2).sum())) + 1e-3


def test_dreams_and_simulated_digits_draw_classes_from_the_learned_prior(net):
    _, y, _ = sleep_dreams(net, 6000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(torch.bincount(y, minlength=3).double() / 6000, PRIOR, atol=0.02)
    _, ys, _ = simulate(net, 6000, seed=2)
    assert torch.allclose(torch.bincount(ys, minlength=3).double() / 6000, PRIOR, atol=0.02)


def test_the_objective_teaches_the_prior(net, single_thread):  # noqa: F811
    """Labelled rows: the gradient in the logits is exactly that of ``-mean log p(y)`` (times the reverse weight);
    unlabelled rows: that of ``-log p(x^0)`` in the logits, ``Σ_s w̃_s (p(c | x^0, h_s) − p(c))``."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64), generator=g)
    y = torch.tensor([0, 2, 2, 1])

    def logit_grad(labels, seed=5):
        net.zero_grad()
        reweighted_wake_sleep_loss(net, x0, labels, particles=3, reduction="sum", reverse_weight=2.0,
                                   wake_phi_weight=0.0, unlabelled="sum",
                                   generator=torch.Generator().manual_seed(seed)).total.backward()
        return net.class_prior_logits.grad.clone()

    onehot = torch.nn.functional.one_hot(y, 3).double()
    assert torch.allclose(logit_grad(y), 2.0 * (PRIOR - onehot).mean(0))
    unlabelled = torch.full((4,), UNLABELLED)
    m = mixed_particles(net, x0, unlabelled, 3, "sum", torch.Generator().manual_seed(5))
    expected = 2.0 * (PRIOR - m.posterior).mean(0)
    assert torch.allclose(logit_grad(unlabelled), expected)
    assert expected.abs().max() > 1e-3                    # so the match is not zero against zero


UNSUP = dict(arch="32-16-10", objective="generative", labels=0, train_size=400, val_size=100, epochs=1,
             batch_size=25, particles=2, binarize="dynamic", augment="none", lr=1e-2, figures=False)


def test_fit_learns_the_prior_and_the_likelihood_command_uses_it(tmp_path, capsys):
    from pyro_dcim.cli import likelihood

    result = train(TrainConfig(**UNSUP, class_prior="learned", out=str(tmp_path / "run")), log=_quiet)
    net = load_model(result.run_dir)
    assert net.class_prior == "learned"
    assert not torch.allclose(net.class_prior_probs(), torch.full((10,), 0.1))      # it moved
    argv = [str(tmp_path / "run"), "--images", "4", "--particles", "8", "--no-progress", "--threads", "1"]
    assert likelihood.main([*argv, "--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary-is-forward.json").read_text())
    assert summary["class_prior"] == "model"
    uniform = train(TrainConfig(**UNSUP, out=str(tmp_path / "u")), log=_quiet)
    capsys.readouterr()
    assert likelihood.main([str(uniform.run_dir), *argv[1:], "--class-prior", "model",
                            "--out", str(tmp_path / "b")]) == 2
    assert "did not learn p(y)" in capsys.readouterr().err


def test_the_likelihood_of_a_labels_run_defaults_to_the_uniform_prior_it_trained_with(tmp_path):
    from pyro_dcim.cli import likelihood

    train(TrainConfig(**dict(UNSUP, labels=20), out=str(tmp_path / "run")), log=_quiet)
    argv = [str(tmp_path / "run"), "--images", "4", "--particles", "8", "--no-progress", "--threads", "1"]
    assert likelihood.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "summary-is-forward.json").read_text())["class_prior"] == "uniform"


@pytest.mark.parametrize("settings", [dict(labels=None), dict(labels=20, objective="discriminative")])
def test_a_learned_prior_needs_unlabelled_images_and_a_generative_objective(tmp_path, settings):
    cfg = TrainConfig(**dict(UNSUP, **settings, class_prior="learned", out=str(tmp_path / "run")))
    with pytest.raises(ConfigError, match="--class-prior learned"):
        train(cfg, log=_quiet)
    assert not (tmp_path / "run").exists()
