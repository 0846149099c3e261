"""The IS-K likelihood protocol (inference/importance_weighted.py) and its fitted proposal, against enumeration."""

import math

import pytest
import torch

from pyro_dcim import DCIM
from pyro_dcim.inference import exact_log_likelihood
from pyro_dcim.inference.importance_weighted import (
    importance_weighted_log_likelihood,
    sum_log1p_exp,
)
from pyro_dcim.training.proposal import fit_proposal, load_proposal
from pyro_dcim.units import log1p_exp

NETS = {
    "dense-01-tied": dict(spec=[6, 5, 3], input_shape=(10,), units="01", tied=True),
    "dense-pm1-untied": dict(spec=[6, 5, 3], input_shape=(10,), units="pm1", tied=False),
    "conv-01": dict(spec=[(2, 1, 2), 5, 3], input_shape=(1, 3, 3), units="01", tied=True),
}


def _net(name: str, scale: float = 2.0, seed: int = 0) -> DCIM:
    torch.manual_seed(seed)
    net = DCIM.from_spec(**NETS[name]).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _exact(net, x0, y, prior):
    per_class = torch.stack([exact_log_likelihood(net, x0, torch.full_like(y, c)) for c in range(net.num_classes)], 1)
    return per_class[torch.arange(len(y)), y], (per_class + prior.log()).logsumexp(1)


@pytest.mark.parametrize("name", sorted(NETS))
def test_estimates_cover_exact_enumeration(name):
    """Every image's conditional and unconditional IS-K estimate within 4 reported s.e. of the truth."""
    net = _net(name)
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(8, *net.input_shape, generator=g) < 0.5).double()
    y = torch.randint(0, 3, (8,), generator=g)
    prior = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    r = importance_weighted_log_likelihood(net, x0, y, 4000, class_prior=prior, generator=g, warn=False)
    cond, marg = _exact(net, x0, y, prior)
    assert ((r.conditional - cond).abs() <= 4 * r.conditional_stderr + 1e-6).all(), (r.conditional - cond)
    assert ((r.marginal - marg).abs() <= 4 * r.marginal_stderr + 1e-6).all(), (r.marginal - marg)
    # the class summed out: p(x0) >= p(x0 | y) p(y) holds for the estimates too (same particles)
    assert (r.marginal >= r.conditional + prior.log()[y] - 1e-9).all()
    assert (r.conditional_ess > 1).all() and (r.conditional_ess <= 4000 + 1e-6).all()


def test_few_particles_bias_is_downward_and_shrinks():
    """E log p̂_K <= log p and the gap shrinks with K (Burda et al. 2016), averaged over repeats."""
    net = _net("dense-01-tied", scale=3.0)
    g = torch.Generator().manual_seed(2)
    x0 = (torch.rand(4, 10, generator=g) < 0.5).double()
    y = torch.randint(0, 3, (4,), generator=g)
    cond, _ = _exact(net, x0, y, torch.full((3,), 1 / 3, dtype=torch.float64))
    gaps = []
    for k in (2, 20, 200):
        est = torch.stack([importance_weighted_log_likelihood(net, x0, y, k, generator=g, warn=False).conditional
                           for _ in range(200)]).mean(0)
        gaps.append(float((cond - est).mean()))
    assert gaps[0] > gaps[1] > gaps[2] > -0.02


def test_one_generator_per_image_makes_each_image_independent_of_its_batch():
    net = _net("dense-01-tied")
    x0 = (torch.rand(5, 10, generator=torch.Generator().manual_seed(3)) < 0.5).double()
    y = torch.tensor([0, 1, 2, 0, 1])

    def gens(idx):
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    whole = importance_weighted_log_likelihood(net, x0, y, 300, generator=gens(range(5)), warn=False)
    part = importance_weighted_log_likelihood(net, x0[2:4], y[2:4], 300, generator=gens([2, 3]), warn=False)
    assert torch.equal(whole.conditional[2:4], part.conditional) and torch.equal(whole.marginal[2:4], part.marginal)


def test_sum_log1p_exp_matches_softplus_sums():
    g = torch.Generator().manual_seed(4)
    for m in (1, 31, 32, 33, 784):
        a = torch.randn(7, m, generator=g, dtype=torch.float64) * 30
        assert torch.allclose(sum_log1p_exp(a), log1p_exp(a).sum(-1), rtol=1e-12, atol=1e-9)
    a = torch.randn(3, 50, dtype=torch.float64, requires_grad=True)
    sum_log1p_exp(a).sum().backward()
    assert torch.allclose(a.grad, torch.sigmoid(a.detach()))


@pytest.mark.parametrize("kwargs,message", [
    (dict(x0=torch.full((2, 10), 0.5, dtype=torch.float64)), "binary"),
    (dict(y=torch.tensor([[0], [1]])), "one class per image"),
    (dict(num_particles=1), "at least 2"),
    (dict(class_prior=torch.tensor([0.5, 0.5], dtype=torch.float64)), "class_prior"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    net = _net("dense-01-tied")
    args = dict(x0=torch.zeros(2, 10, dtype=torch.float64), y=torch.tensor([0, 1]), num_particles=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        importance_weighted_log_likelihood(net, args.pop("x0"), args.pop("y"), **args)


def test_fitted_proposal_tightens_the_bound_and_resumes_exactly(tmp_path):
    net = _net("dense-01-tied", scale=2.5).untie()
    with torch.no_grad():                     # a recognition chain that knows nothing of the generator
        for layer in net.layers:
            layer.weight.mul_(-0.3)
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 3, (400,), generator=g)
    from pyro_dcim.objectives import sleep_dreams

    x, y, _ = sleep_dreams(net, 400, generator=g)   # data from the generator itself
    whole = fit_proposal(net, x, y, epochs=4, particles=10, batch_size=50, lr=3e-2, checkpoint=tmp_path / "a.pt",
                         log=lambda s: None)
    fit_proposal(net, x, y, epochs=2, particles=10, batch_size=50, lr=3e-2, checkpoint=tmp_path / "b.pt",
                 log=lambda s: None)
    resumed = fit_proposal(net, x, y, epochs=4, particles=10, batch_size=50, lr=3e-2, checkpoint=tmp_path / "b.pt",
                           log=lambda s: None)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(next(load_proposal(tmp_path / "b.pt", net).parameters()), next(resumed.parameters()))
    test_x, test_y = x[:40], y[:40]
    cond, _ = _exact(net, test_x, test_y, torch.full((3,), 1 / 3, dtype=torch.float64))
    k = 5
    before = importance_weighted_log_likelihood(net, test_x, test_y, k, generator=g, warn=False).conditional
    after = importance_weighted_log_likelihood(net, test_x, test_y, k, proposal=whole, generator=g,
                                               warn=False).conditional
    assert float((cond - after).mean()) < 0.7 * float((cond - before).mean())
    assert math.isfinite(float(after.mean()))


@pytest.mark.parametrize("spec,shape", [([40, 30, 3], (12,)), ([(2, 1, 4), 30, 3], (1, 4, 4))])
def test_columns_of_flipped_units_equal_the_dense_products(spec, shape, monkeypatch):
    """Confident units flip rarely: the reference-plus-flips path runs, and gives the dense path's weights."""
    import pyro_dcim.inference.flips as flips_module
    from pyro_dcim.inference.importance_weighted import forward_draw, importance_log_weights

    torch.manual_seed(7)
    net = DCIM.from_spec(spec, input_shape=shape).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(20)                       # most units near 0 or 1
    x0 = (torch.rand(3, *shape) < 0.5).double()
    with torch.no_grad():
        drawn = forward_draw(net, x0, 200, torch.Generator().manual_seed(8))
    assert any(f is not None and 0 < f.share < flips_module.MAX_FLIP_SHARE for f in drawn.flips.values())
    calls = []
    real = flips_module.F.embedding_bag
    monkeypatch.setattr(flips_module.F, "embedding_bag", lambda *a, **k: calls.append(1) or real(*a, **k))
    sparse, _ = importance_log_weights(net, x0, 200, generator=torch.Generator().manual_seed(8))
    assert calls                              # the flips path ran
    monkeypatch.setattr(flips_module, "MAX_FLIP_SHARE", -1.0)
    dense, _ = importance_log_weights(net, x0, 200, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(sparse, dense, rtol=0, atol=1e-9)
