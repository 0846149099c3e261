"""The Pyro models: trace structure, the consistency of the tied pair (eq. 19-20), Remark 2."""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from _brute_force import random_net as _net
from _brute_force import single_thread  # noqa: F401 (a fixture)
from pyro import poutine
from pyro.infer import Predictive


def _states(m, units):
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)), dtype=torch.float64)
    return bits, (bits if units == "01" else 2 * bits - 1)


def _log_z_bernoulli(a, units):
    # log Σ_x exp(x a) per unit: x ∈ {0,1} -> softplus(a); x ∈ {-1,1} -> log 2cosh(a)
    lo = torch.zeros_like(a) if units == "01" else -a
    return torch.logaddexp(lo, a).sum(-1)


def _log_trace(fn, *args, **cond):
    tr = poutine.trace(poutine.condition(fn, data=cond)).get_trace(*args)
    tr.compute_log_prob()
    return tr, sum(site["log_prob"].sum() for name, site in tr.nodes.items()
                   if site["type"] == "sample" and name != "data")


@pytest.mark.parametrize("units", ["01", "pm1"])
def test_consistency_of_tied_pair_eq_19_20(units):
    """log Π p_f − log Π p_b + log Z_f − log Z_b = x^nᵀ b^n − x^0ᵀ b^0 for every hidden state."""
    net = _net([3, 3, 4], (5,), units)
    W = [layer.weight for layer in net.layers]
    b = [net.bias(k) for k in range(4)]
    bits1, x1 = _states(3, units)
    bits2, x2 = _states(3, units)
    for x0_bits, y in [(torch.tensor([1.0, 0, 1, 1, 0], dtype=torch.float64), 2),
                      (torch.tensor([0.0, 0, 1, 0, 1], dtype=torch.float64), 0)]:
        x0 = x0_bits if units == "01" else 2 * x0_bits - 1
        values = []
        for (s1, h1), (s2, h2) in itertools.product(zip(bits1, x1), zip(bits2, x2)):
            x0b, yb = x0_bits[None].double(), torch.tensor([y])
            _, log_f = _log_trace(net.forward_model, x0b, yb, x1=s1[None], x2=s2[None])
            _, log_b = _log_trace(net.reverse_model, yb, x0b, x1=s1[None], x2=s2[None])
            onehot = F.one_hot(torch.tensor(y), 4).double()
            log_zf = (_log_z_bernoulli(W[0] @ x0 + b[1], units) + _log_z_bernoulli(W[1] @ h1 + b[2], units)
                      + torch.logsumexp(W[2] @ h2 + b[3], 0))
            log_zb = (_log_z_bernoulli(W[2].T @ onehot + b[2], units) + _log_z_bernoulli(W[1].T @ h2 + b[1], units)
                      + _log_z_bernoulli(W[0].T @ h1 + b[0], units))
            values.append(float((log_f - log_b + log_zf - log_zb).detach()))
        values = torch.tensor(values, dtype=torch.float64)
        expected = float((onehot @ b[3] - x0 @ b[0]).detach())
        assert torch.allclose(values, torch.full_like(values, expected), atol=1e-9)


@pytest.mark.parametrize("units", ["01", "pm1"])
def test_remark_2_single_layer_is_an_rbm(units):
    """n = 1: forward and reverse conditionals are the RBM's exact conditionals."""
    net = _net([6], (10,), units, scale=0.7)
    W, b1, b0 = net.layers[0].weight, net.layers[0].bias, net.input_bias
    bits0, x0 = _states(10, units)
    # brute-force joint: log p(x0, y) ∝ yᵀ W x0 + b1ᵀ y + b0ᵀ x0 over 2^10 x 6 states
    log_joint = x0 @ W.T + b1 + (x0 @ b0)[:, None]
    log_joint = log_joint - torch.logsumexp(log_joint.flatten(), 0)
    exact_y_given_x = log_joint.log_softmax(1)                       # (1024, 6)
    exact_x_given_y = log_joint - torch.logsumexp(log_joint, 0)      # (1024, 6)
    assert torch.allclose(net.forward_mean_field(bits0).logits.log_softmax(1), exact_y_given_x, atol=1e-10)
    for y in range(6):
        logits0 = net.reverse_mean_field(torch.tensor([y])).logits[0]
        model = dist.Bernoulli(logits=logits0).to_event(1).log_prob(bits0)
        assert torch.allclose(model, exact_x_given_y[:, y], atol=1e-10)
    # and the Pyro traces agree with the joint's conditionals
    _, log_f = _log_trace(net.forward_model, bits0[:7], torch.arange(6).repeat(2)[:7])
    assert torch.allclose(log_f, exact_y_given_x[torch.arange(7), torch.arange(6).repeat(2)[:7]].sum())


def test_first_hidden_layer_mean_field_is_exact_and_matches_ancestral_samples():
    net = _net([(3, 2, 2), 5, 3], (1, 6, 6), scale=1.5)
    x0 = torch.bernoulli(torch.full((2, 1, 6, 6), 0.5, dtype=torch.float64))
    mu1 = net.forward_mean_field(x0).hidden[0]
    s = 20000
    samples = Predictive(net.forward_model, num_samples=s, parallel=True)(x0)["x1"]
    assert samples.shape == (s, 2, 2, 2, 2)
    freq = samples.mean(0)
    stderr = (mu1 * (1 - mu1) / s).sqrt().clamp_min(1e-12)
    assert ((freq - mu1).abs() <= 4 * stderr).all()


def test_trace_structure_and_log_prob_by_hand():
    net = _net([(3, 1, 2), 4, 3], (1, 5, 5), scale=0.5)
    x0 = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([2, 0, 1])
    tr, log_f = _log_trace(net.forward_model, x0, y)
    sites = {n: s for n, s in tr.nodes.items() if s["type"] == "sample"}
    assert list(sites) == ["data", "x1", "x2", "class"]
    assert isinstance(sites["x1"]["fn"].base_dist, dist.Bernoulli) and sites["x1"]["fn"].event_shape == (2, 5, 5)
    assert sites["x2"]["value"].shape == (3, 4) and isinstance(sites["class"]["fn"], dist.Categorical)
    assert sites["class"]["is_observed"] and torch.equal(sites["class"]["value"], y)
    assert "dcim$$$layers.0.weight" in pyro.get_param_store().keys()
    x1, x2 = sites["x1"]["value"], sites["x2"]["value"]
    a1 = net.layers[0](x0)
    a2 = net.layers[1](x1)
    a3 = net.layers[2](x2)
    by_hand = (-F.binary_cross_entropy_with_logits(a1, x1, reduction="sum")
               - F.binary_cross_entropy_with_logits(a2, x2, reduction="sum")
               + a3.log_softmax(-1)[torch.arange(3), y].sum())
    assert torch.allclose(log_f, by_hand) and torch.allclose(tr.log_prob_sum(), by_hand)

    tr, log_b = _log_trace(net.reverse_model, y, x0)
    sites = {n: s for n, s in tr.nodes.items() if s["type"] == "sample"}
    assert list(sites) == ["data", "x2", "x1", "x0"] and sites["x0"]["is_observed"]
    x2, x1 = sites["x2"]["value"], sites["x1"]["value"]
    c2 = net.layers[2].adjoint(F.one_hot(y, 3).double()) + net.bias(2)
    c1 = net.layers[1].adjoint(x2) + net.bias(1)
    c0 = net.layers[0].adjoint(x1) + net.bias(0)
    by_hand = -sum(F.binary_cross_entropy_with_logits(c, v, reduction="sum")
                   for c, v in [(c2, x2), (c1, x1), (c0, x0)])
    assert torch.allclose(log_b, by_hand)


def test_mean_field_guides_place_the_mean_field_marginals():
    net = _net([4, 3, 2], (6,), "pm1")
    x0 = torch.rand(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    tr = poutine.trace(net.mean_field_guide).get_trace(x0, y)
    mf = net.forward_mean_field(x0)
    for k in (1, 2):
        probs = tr.nodes[f"x{k}"]["fn"].base_dist.probs
        assert torch.allclose(probs, net.units.bit_probs(mf.hidden[k - 1]))
    tr = poutine.trace(net.reverse_mean_field_guide).get_trace(y)
    rev = net.reverse_mean_field(y)
    assert torch.allclose(tr.nodes["x2"]["fn"].base_dist.probs, net.units.bit_probs(rev.hidden[0]))
    assert torch.allclose(tr.nodes["x1"]["fn"].base_dist.probs, net.units.bit_probs(rev.hidden[1]))


def test_particle_plate_vectorises_model_replayed_on_guide():
    net = _net([(3, 2, 2), 5, 3], (1, 6, 6))
    x0 = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    with pyro.plate("particles", 11, dim=-2):
        guide_tr = poutine.trace(net.mean_field_guide).get_trace(x0, y)
        model_tr = poutine.trace(poutine.replay(net.forward_model, trace=guide_tr)).get_trace(x0, y)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    assert guide_tr.nodes["x1"]["value"].shape == (11, 4, 2, 2, 2)
    log_w = sum(model_tr.nodes[n]["log_prob"] for n in ("x1", "x2", "class")) \
        - sum(guide_tr.nodes[n]["log_prob"] for n in ("x1", "x2"))
    assert log_w.shape == (11, 4) and torch.isfinite(log_w).all()


def test_bernoulli_site_log_prob_and_draws_match_torch():
    """The tuned Bernoulli of the sites: same log-prob as torch's for bits, soft targets and
    saturated logits, before and after a particle plate expands it, and unbiased draws."""
    from pyro_dcim.pyro_models import _Bernoulli

    torch.manual_seed(0)
    logits = torch.cat([8 * torch.randn(4, 5, dtype=torch.float64), torch.tensor([[60.0, -60, 0, 1e-3, -30]])])
    ours = _Bernoulli(logits=logits, validate_args=False)
    ref = torch.distributions.Bernoulli(logits=logits, validate_args=False)
    for value in (torch.randint(0, 2, (3, 5, 5)).double(), torch.rand(3, 5, 5, dtype=torch.float64)):
        assert torch.allclose(ours.log_prob(value), ref.log_prob(value), atol=1e-12)
        assert torch.allclose(ours.expand((3, 5, 5)).log_prob(value), ref.log_prob(value), atol=1e-12)
        assert torch.allclose(ours.expand((3, 5, 5)).to_event(1).log_prob(value), ref.log_prob(value).sum(-1))
    probs = torch.tensor([0.0, 1e-3, 0.3, 0.9, 1.0])
    draws = _Bernoulli(probs=probs).sample((40_000,))
    assert draws.dtype == probs.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    se = (probs * (1 - probs) / 40_000).sqrt()
    assert ((draws.mean(0) - probs).abs() <= 4 * se + 1e-4).all()


@pytest.mark.usefixtures("single_thread")
def test_pyro_importance_with_the_guides_gives_the_exact_far_end_marginals():
    """The guides cover every latent site of their model (the class, or the image, when it is
    not given), so Pyro's own ``Importance`` + ``EmpiricalMarginal`` estimate the exact marginals."""
    from pyro.infer import EmpiricalMarginal, Importance

    from pyro_dcim.inference import exact_marginals

    net = _net([3, 3, 4], (5,), scale=1.5)
    x0 = torch.tensor([[1.0, 0, 1, 1, 0]], dtype=torch.float64)
    y = torch.tensor([2])
    num_samples = 1500
    cases = [(net.forward_model, net.mean_field_guide, (x0,), "class",
              exact_marginals(net, x0).classes[0]),
             (net.reverse_model, net.reverse_mean_field_guide, (y,), "x0",
              exact_marginals(net, y=y, direction="reverse").image[0])]
    for model, guide, args, site, exact in cases:
        guide_tr = poutine.trace(guide).get_trace(*args)
        assert site in guide_tr.nodes and not guide_tr.nodes[site]["is_observed"]
        posterior = Importance(model, guide=guide, num_samples=num_samples).run(*args)
        marginal = EmpiricalMarginal(posterior, site)
        if site == "class":
            estimate = torch.stack([marginal.log_prob(torch.tensor([c])).exp() for c in range(net.num_classes)])
        else:
            estimate = marginal.mean[0]
        ess = float(posterior.get_ESS())
        stderr = (exact * (1 - exact) / ess).sqrt()
        assert ((estimate - exact).abs() <= 4 * stderr + 1e-3).all(), (site, estimate, exact, ess)


@pytest.mark.parametrize("spec,input_shape", [([3, 3, 4], (5,)), ([(2, 1, 2), 3, 4], (1, 3, 3))])
def test_trace_enum_elbo_sums_out_the_layers_exactly(spec, input_shape):
    """``config_enumerate`` marks every hidden layer; with an empty guide ``TraceEnum_ELBO``'s loss
    is then ``-log p(y | x^0)`` (forward) and ``-log p(x^0 | y)`` (reverse), as exact enumeration."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from pyro_dcim.inference import exact_posterior

    net = _net(spec, input_shape, scale=1.5)
    x0 = torch.bernoulli(torch.full((3, *input_shape), 0.5, dtype=torch.float64))
    y = torch.tensor([2, 0, 1])
    tr = poutine.trace(config_enumerate(net.forward_model)).get_trace(x0, y)
    assert all(tr.nodes[f"x{k}"]["infer"].get("enumerate") == "parallel" for k in (1, 2))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    for direction, model, args in [("forward", net.forward_model, (x0, y)), ("reverse", net.reverse_model, (y, x0))]:
        loss = elbo.loss(config_enumerate(model), lambda *args: None, *args)
        exact = exact_posterior(net, x0, y, direction=direction).log_evidence.sum()
        assert loss == pytest.approx(-float(exact), rel=1e-10)


def test_enumerating_a_wide_layer_is_a_clear_error():
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    net = _net([17, 3], (4,))
    x0, y = torch.rand(2, 4, dtype=torch.float64), torch.tensor([0, 2])
    with pytest.raises(ValueError, match="cannot enumerate a layer of 17 units"):
        TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(net.forward_model), lambda *args: None, x0, y)


@pytest.mark.parametrize("elbo_class", ["Trace_ELBO", "TraceGraph_ELBO"])
def test_pyro_elbos_with_the_class_unobserved_are_the_exact_kl(elbo_class):
    """With ``y=None`` the forward model has no observation, so ``-ELBO = KL(q(h, c) || p(h, c | x^0))``,
    which enumeration gives exactly (and its variance under ``q``, for the Monte Carlo tolerance)."""
    import pyro.infer

    net = _net([3, 3, 4], (5,), scale=1.5)
    x0 = torch.tensor([[1.0, 0, 1, 1, 0]], dtype=torch.float64)
    bits, _ = _states(3, "01")
    with torch.no_grad():
        mf = net.forward_mean_field(x0)
        a1, a2, a3 = net.layers[0](x0)[0], net.layers[1](bits), net.layers[2](bits)

    def log_bernoulli(logits, s):
        return (s * logits - torch.logaddexp(logits, torch.zeros(()))).sum(-1)

    log_q = (log_bernoulli(mf.preactivations[0][0], bits)[:, None, None]
             + log_bernoulli(mf.preactivations[1][0], bits)[None, :, None] + mf.logits[0].log_softmax(-1))
    log_p = (log_bernoulli(a1, bits)[:, None, None] + log_bernoulli(a2[:, None, :], bits[None])[:, :, None]
             + a3.log_softmax(-1)[None])
    kl = float((log_q.exp() * (log_q - log_p)).sum())
    num_particles = 20000
    stderr = float((log_q.exp() * (log_q - log_p - kl) ** 2).sum() / num_particles) ** 0.5
    elbo = getattr(pyro.infer, elbo_class)(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    assert elbo.loss(net.forward_model, net.mean_field_guide, x0) == pytest.approx(kl, abs=4 * stderr)
