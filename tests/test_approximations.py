"""Approximations of the marginals beside (2): AP2 and variational mean field (issue 14)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from _brute_force import random_net, single_thread  # noqa: F401

from pyro_dcim import DCIM
from pyro_dcim.approximation_error import class_kl, random_dcim
from pyro_dcim.approximations import APPROXIMATIONS, ap2, first_order, softmax_expectation_logits, squared_map
from pyro_dcim.cli import fit
from pyro_dcim.inference import (
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
    mean_field_marginals,
    variational_posterior,
)
from pyro_dcim.objectives import bidirectional_loss, sampled_layer_loss
from pyro_dcim.training.config import ConfigError, TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")
NAMES = list(APPROXIMATIONS)
CONV_SPEC = [(3, 1, 2), (2, 2, 3), 5, 4]


def _bits(batch, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, dim), 0.5, dtype=torch.float64), generator=g)


def _old_forward(net, x0):
    """Today's forward pass (eq. 14-15) written out, the reference for "bit for bit"."""
    h, hidden = net.units.state(x0), []
    for layer in net.layers[:-1]:
        h = net.units.mean(layer(h))
        hidden.append(h)
    return hidden, net.layers[-1](h)


def _old_reverse(net, y):
    h, hidden = F.one_hot(y, net.num_classes).to(net.input_bias.dtype), []
    for j in range(net.num_layers, 1, -1):
        h = net.units.mean(net.layers[j - 1].adjoint(h) + net.bias(j - 1))
        hidden.append(h)
    return hidden, net.units.bit_logits(net.layers[0].adjoint(h) + net.input_bias)


@pytest.mark.parametrize("units", ["01", "pm1"])
@pytest.mark.parametrize("spec, shape", [([5, 4, 3], (6,)), (CONV_SPEC, (1, 5, 5))])
def test_first_order_is_todays_pass_bit_for_bit(units, spec, shape):
    net = random_net(spec, shape, units, seed=1)
    x0 = torch.rand(3, *shape, dtype=torch.float64)
    mf = net.forward_mean_field(x0)
    hidden, logits = _old_forward(net, x0)
    assert torch.equal(mf.logits, logits) and all(torch.equal(a, b) for a, b in zip(mf.hidden, hidden))
    assert torch.equal(net(x0), net.forward_mean_field(x0, approximation="first-order").logits)
    y = torch.tensor([0, 2, 1])
    rev = net.reverse_mean_field(y, approximation="first-order")
    hidden, logits = _old_reverse(net, torch.arange(net.num_classes))   # once per class, then gathered, as today
    hidden, logits = [h[y] for h in hidden], logits[y]
    assert torch.equal(rev.logits, logits) and all(torch.equal(a, b) for a, b in zip(rev.hidden, hidden))


@pytest.mark.parametrize("units", ["01", "pm1"])
@pytest.mark.parametrize("spec, shape", [([5, 4, 3], (6,)), (CONV_SPEC, (1, 5, 5))])
def test_ap2_with_zero_input_variance_is_first_order(units, spec, shape):
    """The first hidden layer's parent is observed (variance 0): AP2's first step is (2) exactly."""
    net = random_net(spec, shape, units, seed=2)
    x0 = torch.bernoulli(torch.full((3, *shape), 0.5, dtype=torch.float64))
    a, b = ap2(net, net.units.state(x0)), first_order(net, net.units.state(x0))
    assert torch.equal(a.preactivations[0], b.preactivations[0])
    start = net.class_state(torch.tensor([1, 0, 2]))
    a, b = (f(net, start, direction="reverse", layer=net.num_layers) for f in (ap2, first_order))
    assert torch.equal(a.preactivations[0], b.preactivations[0])
    assert not torch.allclose(a.preactivations[-1], b.preactivations[-1])   # deeper layers do differ


@pytest.mark.parametrize("adjoint", [False, True])
def test_squared_map_of_a_convolution_is_the_squared_dense_matrix(adjoint):
    net = random_net(CONV_SPEC, (1, 5, 5), seed=3)
    layer = net.layers[1]
    n_in, n_out = (int(torch.Size(s).numel()) for s in (layer.in_shape, layer.out_shape))
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *layer.in_shape)
    dense = (layer(basis) - layer.bias).reshape(n_in, n_out).T               # W as an (out, in) matrix
    v_shape = layer.out_shape if adjoint else layer.in_shape
    v = torch.rand(2, *v_shape, dtype=torch.float64)
    expected = v.flatten(1) @ dense.square() if adjoint else v.flatten(1) @ dense.square().T
    assert torch.allclose(squared_map(layer, v, adjoint=adjoint).flatten(1), expected)


@pytest.mark.parametrize("units", ["01", "pm1"])
@pytest.mark.parametrize("name", NAMES)
def test_first_hidden_layer_is_exact_where_its_parent_is_observed(units, name):
    """First-order and AP2: always (x^1's parent is x^0).  Variational: with one hidden layer, where
    the fit given x^0 alone is the exact, factorised conditional."""
    widths = [5] if name == "variational" else [5, 4]
    net = random_dcim(widths, 8, 3, 3.0, units, seed=4)
    x0 = _bits(6, 8, 4)
    got = mean_field_marginals(net, x0, approximation=name).hidden[0]
    assert torch.allclose(got, exact_marginals(net, x0).hidden[0], atol=1e-9)


@pytest.mark.parametrize("units, scale", [("01", 0.25), ("pm1", 0.0625)])
@pytest.mark.parametrize("name", NAMES)
def test_small_weights_every_approximation_agrees_with_exact(units, scale, name):
    """Scale 0.25 for {0,1}; ±1 at a quarter of it, the same net (the ±1 net with W is the {0,1} net with 4W).
    Mean absolute errors, as in the atlas (the largest single class error is up to 1.7e-3)."""
    net = random_dcim([6, 6], 10, 4, scale, units, seed=5)
    x0 = _bits(8, 10, 5)
    mf, ex = mean_field_marginals(net, x0, approximation=name), exact_marginals(net, x0)
    assert all((a - b).abs().mean() <= 1e-3 for a, b in zip([*mf.hidden, mf.classes], [*ex.hidden, ex.classes]))
    y = torch.arange(4)
    mf = mean_field_marginals(net, y=y, direction="reverse", approximation=name)
    ex = exact_marginals(net, y=y, direction="reverse")
    assert all((a - b).abs().mean() <= 1e-3 for a, b in zip([*mf.hidden, mf.image], [*ex.hidden, ex.image]))


@pytest.mark.parametrize("units", ["01", "pm1"])
def test_ap2_has_a_quarter_of_first_orders_class_kl_at_scale_4_with_3_hidden_layers(units):
    kl = {name: [] for name in ("first-order", "ap2")}
    for seed in range(3):
        net = random_dcim([8, 8, 8], 16, 4, 4.0, units, seed=seed)
        x0 = _bits(32, 16, seed)
        exact = exact_marginals(net, x0).classes
        for name in kl:
            kl[name].append(class_kl(exact, mean_field_marginals(net, x0, approximation=name).classes).mean())
    assert sum(kl["ap2"]) <= sum(kl["first-order"]) / 4


def test_class_softmax_approximation_is_closer_to_monte_carlo_than_the_plug_in():
    g = torch.Generator().manual_seed(6)
    mean = 2 * torch.randn(20, 5, generator=g, dtype=torch.float64)
    a = torch.randn(20, 5, 5, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + 1e-9 * torch.eye(5, dtype=torch.float64)
    draws = torch.distributions.MultivariateNormal(mean, cov).sample((20000,))
    mc = draws.softmax(-1).mean(0)
    approx = softmax_expectation_logits(mean, cov).softmax(-1)
    assert class_kl(mc, approx).mean() < class_kl(mc, mean.softmax(-1)).mean() / 2
    # no variance: the plain softmax
    assert torch.allclose(softmax_expectation_logits(mean, torch.zeros_like(cov)).softmax(-1), mean.softmax(-1))


@pytest.mark.parametrize("units", ["01", "pm1"])
@pytest.mark.parametrize("scale", [0.5, 2.0, 6.0])
def test_variational_bound_is_below_exact_and_no_iteration_decreases_it(units, scale):
    net = random_dcim([5, 4], 8, 3, scale, units, seed=int(10 * scale))
    x0, y = _bits(10, 8, 7), torch.arange(10) % 3
    fwd = variational_posterior(net, x0, y=y)
    assert (fwd.elbo <= exact_posterior(net, x0, y).log_evidence + 1e-9).all()
    rev = variational_posterior(net, x0, y=y, direction="reverse")
    assert (rev.elbo <= exact_log_likelihood(net, x0, y) + 1e-9).all()
    for f in (fwd, rev):
        assert (f.history.diff(dim=0) >= -1e-12).all()
        assert f.history.shape[0] == f.iterations + 1
        assert torch.allclose(f.history[-1], f.elbo.detach())
    assert (rev.history[-1] > rev.history[0] + 1e-6).any()   # the iterations do move off the start


def test_variational_is_vectorised_over_the_batch():
    net = random_dcim([5, 4], 8, 3, 3.0, "01", seed=8)
    x0, y = _bits(6, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    together = variational_posterior(net, x0, y=y, direction="reverse", tolerance=0, iterations=30).elbo
    alone = torch.cat([variational_posterior(net, x0[i:i + 1], y=y[i:i + 1], direction="reverse", tolerance=0,
                                             iterations=30).elbo for i in range(6)])
    assert torch.allclose(together, alone)


@pytest.mark.parametrize("name", NAMES)
def test_every_approximation_runs_on_conv_nets_and_trains(name):
    torch.manual_seed(9)
    net = DCIM.from_spec(CONV_SPEC, input_shape=(1, 5, 5))
    x0, y = torch.rand(4, 1, 5, 5), torch.tensor([0, 1, 2, 3])
    for loss in (bidirectional_loss, sampled_layer_loss):
        parts = loss(net, x0, y, approximation=name)
        net.zero_grad()
        parts.total.backward()
        assert math.isfinite(float(parts.total.detach()))
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        assert net.layers[0].weight.grad.abs().sum() > 0
    probs = mean_field_marginals(net, x0, approximation=name).classes
    assert torch.allclose(probs.sum(-1), torch.ones(4))


def test_guides_take_the_approximation():
    import pyro.poutine as poutine

    net = random_net([5, 4, 3], (6,), seed=10)
    x0 = torch.bernoulli(torch.full((2, 6), 0.5, dtype=torch.float64))
    tr = {name: poutine.trace(net.mean_field_guide).get_trace(x0, approximation=name)
          for name in ("first-order", "ap2")}
    d = {name: t.nodes["x2"]["fn"].base_dist.logits for name, t in tr.items()}
    assert not torch.allclose(d["first-order"], d["ap2"])
    rev = poutine.trace(net.reverse_mean_field_guide).get_trace(torch.tensor([0, 2]), approximation="ap2")
    assert torch.allclose(rev.nodes["x1"]["fn"].base_dist.logits,
                          net.units.bit_logits(net.reverse_mean_field(torch.tensor([0, 2]), approximation="ap2")
                                               .preactivations[-1]))


def test_unknown_approximation_is_a_clear_error(tmp_path, capsys):
    net = random_net([5, 3], (6,))
    with pytest.raises(ValueError, match="unknown approximation 'ap3'"):
        net.forward_mean_field(torch.zeros(1, 6, dtype=torch.float64), approximation="ap3")
    with pytest.raises(ConfigError, match="approximation must be one of"):
        TrainConfig(approximation="ap3").validate()
    with pytest.raises(SystemExit) as e:
        fit.main(["--approximation", "ap3", "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and "ap3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_approximation_round_trips_through_config_and_resume(tmp_path):
    out = tmp_path / "run"
    tiny = ["--arch", "16-10", "--train-size", "200", "--val-size", "100", "--batch-size", "50", "--no-figures",
            "--threads", "1"]
    assert fit.main(tiny + ["--epochs", "1", "--approximation", "ap2", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["approximation"] == "ap2"
    assert fit.main(["--resume", str(out), "--epochs", "2"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["approximation"] == "ap2" and config["epochs"] == 2
    assert TrainConfig().approximation == "first-order"
