"""The Pyro peer of benchmarks/rws_peer.py is the right pair: the forward-chain guide covers the reverse
model's latent sites, and Pyro's ``ReweightedWakeSleep`` on it computes our objective at batch 1 (same
particles, same loss, same gradients); at a larger batch it weights the batch's summed log-weights."""

import math
import sys
import warnings
from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.poutine.util import prune_subsample_sites

from pyro_dcim import DCIM
from pyro_dcim.objectives import reweighted_wake_sleep_loss, wake_particles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rws_peer import forward_chain_guide, pyro_rws, pyro_step, reverse_chain_model  # noqa: E402

K = 5


def _net(seed: int = 0) -> DCIM:
    torch.manual_seed(seed)
    net = DCIM.from_spec([4, 3, 2], input_shape=(6,)).untie()
    with torch.no_grad():  # the reverse copy apart from the forward weights: a wrong direction would show
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return net


def _data(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 6, generator=g).bernoulli(generator=g), torch.randint(0, 2, (batch,), generator=g)


def _grads(net: DCIM) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_guide_covers_the_reverse_model_latent_sites():
    pyro.clear_param_store()
    net = _net()
    x0, y = _data(3)
    # as Pyro's vectorised RWS runs them: a particle plate inside the replay, so it broadcasts the model's sites
    model = pyro.plate("particles", K, dim=-2)(reverse_chain_model(net, "sites"))
    guide = pyro.plate("particles", K, dim=-2)(forward_chain_guide(net, "sites"))
    guide_trace = poutine.trace(guide).get_trace(y, x0)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(y, x0)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)  # plates
    latent = {n: s for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}
    drawn = {n: s for n, s in guide_trace.nodes.items() if s["type"] == "sample"}
    assert set(latent) == set(drawn) == {"x1", "x2"}
    for n in latent:
        assert drawn[n]["value"].shape == (K, 3, net.shapes[int(n[1:])][0])
        assert drawn[n]["fn"].shape() == latent[n]["fn"].shape()
        assert [f.name for f in drawn[n]["cond_indep_stack"]] == [f.name for f in latent[n]["cond_indep_stack"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyro.util.check_model_guide_match(model_trace, guide_trace)


def test_pyro_rws_equals_ours_at_batch_one():
    """Seeded alike, both draw the same particles (``u < σ(a)`` per layer, K at once): the K-sample bound,
    the class term and every parameter's gradient agree."""
    pyro.clear_param_store()
    net = _net()
    x0, y = _data(1)
    torch.manual_seed(5)
    ours = reweighted_wake_sleep_loss(net, x0, y, particles=K, wake_phi_weight=1.0, reduction="sum")
    ours.total.backward()
    ours_grads = _grads(net)
    net.zero_grad()
    torch.manual_seed(5)
    theta_loss, _ = pyro_rws(K).loss_and_grads(reverse_chain_model(net, "b1"), forward_chain_guide(net, "b1"), y, x0)
    assert theta_loss == pytest.approx(float(ours.forward_nll + ours.reverse_nll_sum), rel=1e-5)
    for name, g in _grads(net).items():
        torch.testing.assert_close(g, ours_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_pyro_rws_with_sequential_particles_agrees_in_expectation():
    """``vectorize_particles=False`` draws the particles one by one (another order of the same uniforms), so
    it agrees in distribution only: the mean K-sample bound over many draws, within 4 standard errors."""
    pyro.clear_param_store()
    net = _net()
    x0, y = _data(1)
    model, guide, rws = reverse_chain_model(net, "seq"), forward_chain_guide(net, "seq"), pyro_rws(K, False)
    theirs, ours = [], []
    with torch.no_grad():
        for seed in range(200):
            torch.manual_seed(seed)
            theirs.append(float(rws.loss(model, guide, y, x0)[0]))
            parts = reweighted_wake_sleep_loss(net, x0, y, particles=K, reduction="sum",
                                               generator=torch.Generator().manual_seed(10_000 + seed))
            ours.append(float(parts.forward_nll + parts.reverse_nll_sum))
    a, b = torch.tensor(theirs), torch.tensor(ours)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(float(a.mean() - b.mean())) < 4 * se


def test_pyro_rws_weights_the_whole_batch_at_once():
    """At batch B Pyro's wake-θ loss is ``-log mean_k Π_b w_kb`` (one weight per particle for the batch),
    ours ``-Σ_b log mean_k w_kb`` (a weight per particle per image): same particles, different numbers."""
    pyro.clear_param_store()
    net = _net()
    x0, y = _data(4)
    torch.manual_seed(7)
    log_p, log_q = wake_particles(net, x0, y, K)
    log_w = (log_p - log_q).detach()                     # (K, B)
    class_nll = float(F.cross_entropy(net(x0), y, reduction="sum").detach())
    torch.manual_seed(7)
    with torch.no_grad():
        theta_loss, _ = pyro_rws(K).loss(reverse_chain_model(net, "bB"), forward_chain_guide(net, "bB"), y, x0)
    per_batch = -(log_w.sum(1).logsumexp(0) - math.log(K))
    per_image = -(log_w.logsumexp(0) - math.log(K)).sum()
    assert float(theta_loss) == pytest.approx(class_nll + float(per_batch), rel=1e-5)
    assert float(per_batch) != pytest.approx(float(per_image), rel=1e-3)


def test_pyro_svi_step_moves_the_net():
    """``svi.step`` reaches the net's own tensors (the param store holds them under the step's name)."""
    pyro.clear_param_store()
    net = _net()
    x0, y = _data(2)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    pyro_step(net, K, lr=1e-2, name="moves")(x0, y)
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before)
