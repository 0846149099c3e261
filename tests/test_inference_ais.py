"""AIS and BDMC against exact enumeration; each tempered Gibbs transition keeps its tempered target."""

import math
import time
from pathlib import Path

import pyro
import pytest
import torch
from _brute_force import joint_states, random_batch, random_net, single_thread, state_index
from pyro import poutine
from scipy.stats import chi2

from pyro_dcim import DCIM
from pyro_dcim.inference import exact_log_likelihood
from pyro_dcim.inference.ais import ais_log_likelihood, ais_log_marginal, annealing_schedule
from pyro_dcim.inference.bdmc import bdmc, simulate
from pyro_dcim.inference.energy import ChainEnergy
from pyro_dcim.inference.logistic import log_sigmoid_abs_sum, softplus
from pyro_dcim.pyro_models import hidden_site

pytestmark = pytest.mark.usefixtures(single_thread.__name__)

DENSE = ([4, 3, 3], (6,))
CONV = ([(2, 1, 2, 0), 3, 2], (1, 3, 3))   # x1: 2x2x2 (conv), x2: 3
CONV2 = ([(2, 1, 2, 0), (2, 1, 1, 0), 3, 2], (1, 3, 3))   # two conv layers: x2 has a conv and a dense child
CASES = [(DENSE, "01", 2.0), (DENSE, "pm1", 1.0), (CONV, "01", 1.5)]
IDS = ["dense-01", "dense-pm1", "conv-01"]


def _flat_states(net):
    return {k: v.flatten(1) for k, v in joint_states(net).items()}


def _pyro_terms(net, x0, y):
    """The four terms of every joint state from the Pyro models' own log-probabilities, ``(J, B)``."""
    states = joint_states(net)
    cond = {hidden_site(k): v.unsqueeze(1) for k, v in states.items()}
    out = {}
    for direction, fn, args, end in (("forward", net.forward_model, (x0, y), "class"),
                                     ("reverse", net.reverse_model, (y, x0), "x0")):
        with torch.no_grad(), pyro.plate("joint", len(states[1]), dim=-2):
            tr = poutine.trace(poutine.condition(fn, data=cond)).get_trace(*args)
        tr.compute_log_prob()
        out[direction] = sum(tr.nodes[hidden_site(k)]["log_prob"] for k in states)
        out[f"{direction}_end"] = tr.nodes[end]["log_prob"].expand_as(out[direction])
    return out


def _tempered_log_f(net, x0, y, weights):
    """``log f(h)`` of every joint state by brute force, ``(J, B)``."""
    terms = _pyro_terms(net, x0, y)
    return sum(w * terms[name] for name, w in weights.items())


@pytest.mark.parametrize("spec,units,scale", CASES, ids=IDS)
def test_energy_terms_are_the_pyro_models_log_probs(spec, units, scale):
    net = random_net(*spec, units, seed=5, scale=scale)
    x0, y = random_batch(net, 3, seed=1)
    states = _flat_states(net)
    bits = {k: v[:, None].expand(-1, 3, -1) for k, v in states.items()}
    mine = ChainEnergy(net, x0, y).terms(bits)
    for name, ref in _pyro_terms(net, x0, y).items():
        assert torch.allclose(mine[name], ref, atol=1e-9), name


@pytest.mark.parametrize("spec,units,scale", CASES + [(CONV2, "pm1", 0.8)], ids=IDS + ["conv2-pm1"])
@pytest.mark.parametrize("weights", [
    {"reverse": 1.0, "reverse_end": 0.35},                          # AIS from the prior
    {"forward": 0.6, "reverse": 0.4, "reverse_end": 0.4},           # AIS from the forward chain
    {"forward": 1.0, "forward_end": 1.0},                           # the forward posterior
], ids=["prior-path", "forward-path", "posterior"])
def test_one_tempered_sweep_keeps_its_target(spec, units, scale, weights):
    """Draw states from the enumerated tempered target, apply one sweep, test the histogram (χ²)."""
    net = random_net(*spec, units, seed=7, scale=scale)
    x0, y = random_batch(net, 2, seed=3)
    log_f = _tempered_log_f(net, x0, y, weights)
    target = torch.softmax(log_f, 0)                                   # (J, B)
    states = _flat_states(net)
    n = 20000
    torch.manual_seed(0)
    idx = torch.multinomial(target.T, n, replacement=True).T          # (N, B)
    bits = {k: v[idx].clone() for k, v in states.items()}
    ChainEnergy(net, x0, y).sweep(bits, weights)
    new = state_index(net, {k: bits[k].reshape(n, 2, *net.shapes[k]) for k in bits})
    assert (new != idx).double().mean() > 0.1                         # the sweep does move
    for b in range(2):
        counts = torch.bincount(new[:, b], minlength=target.shape[0]).double()
        expected = target[:, b] * n
        big = expected >= 5
        obs = torch.cat([counts[big], counts[~big].sum()[None]])
        exp = torch.cat([expected[big], expected[~big].sum()[None]])
        keep = exp > 0
        stat = ((obs - exp) ** 2 / exp)[keep].sum().item()
        assert chi2.sf(stat, int(keep.sum()) - 1) > 1e-4


@pytest.mark.parametrize("spec,units,scale", CASES, ids=IDS)
@pytest.mark.parametrize("start", ["prior", "forward"])
def test_ais_within_3_stderr_of_exact(spec, units, scale, start):
    """The error bar is that of the observed weights: with too few temperatures every chain can
    miss a high-weight region and the weights look fine (100 steps did so here for ±1 units,
    z = −5.5 at k̂ = −0.1); BDMC is the check for that, so this test anneals slowly enough."""
    net = random_net(*spec, units, seed=1, scale=scale)
    x0, y = random_batch(net, 6, seed=2)
    exact = exact_log_likelihood(net, x0, y)
    torch.manual_seed(0)
    res = ais_log_likelihood(net, x0, y, num_steps=400, num_chains=64, start=start)
    assert res.estimate.shape == res.stderr.shape == res.khat.shape == (6,)
    assert res.log_weights.shape == (64, 6)
    ok = res.reliable
    assert ok.sum() >= 4
    z = (res.estimate - exact) / res.stderr
    assert (z[ok].abs() <= 3).all(), (z, res.khat)


def test_ais_gets_closer_with_more_temperatures():
    """The mean shortfall of 16 images falls from nats at one temperature to noise at 300."""
    net = random_net(*DENSE, "01", seed=4, scale=4.0)
    x0, y = random_batch(net, 16, seed=5)
    exact = exact_log_likelihood(net, x0, y)
    errors, noise = [], []
    for steps in (1, 10, 300):
        torch.manual_seed(0)
        res = ais_log_likelihood(net, x0, y, steps, 16, start="prior")
        errors.append(float((exact - res.estimate).mean()))
        noise.append(float(res.stderr.pow(2).mean().sqrt() / 4))
    assert errors[0] > 1.0 and errors[0] > errors[1] + 3 * noise[1]
    assert errors[1] > errors[2] and abs(errors[2]) < 3 * noise[2] + 0.01


@pytest.mark.parametrize("spec,units,scale", CASES, ids=IDS)
def test_bdmc_sandwiches_the_exact_likelihood(spec, units, scale):
    net = random_net(*spec, units, seed=2, scale=scale)
    torch.manual_seed(0)
    res = bdmc(net, num_images=6, num_steps=100, num_chains=32, seed=1)
    exact = exact_log_likelihood(net, res.x0, res.y)
    se_lo, se_up = res.forward.stderr, res.reverse.stderr
    assert (res.lower <= exact + 3 * se_lo + 1e-6).all()
    assert (res.upper >= exact - 3 * se_up - 1e-6).all()
    assert torch.equal(res.gap, res.upper - res.lower)


def test_bdmc_gap_shrinks_with_temperatures():
    net = random_net(*DENSE, "01", seed=4, scale=2.5)
    gaps = []
    for steps in (1, 10, 300):
        torch.manual_seed(0)
        gaps.append(float(bdmc(net, 16, steps, 16, start="prior", seed=0).gap.mean()))
    assert gaps[0] > 0.3 and gaps[0] > 3 * gaps[1] and abs(gaps[2]) < 0.02


def test_simulated_hidden_state_is_an_exact_joint_draw():
    """Class frequencies follow p(y); the image follows p(x^0 | x^1) of the drawn h."""
    net = random_net(*DENSE, "01", seed=0, scale=1.0)
    prior = torch.tensor([0.7, 0.2, 0.1])
    x0, y, h = simulate(net, 4000, class_prior=prior, seed=0)
    freq = torch.bincount(y, minlength=3).double() / 4000
    assert ((freq - prior.double()).abs() <= 4 * (prior * (1 - prior) / 4000).sqrt()).all()
    assert set(h) == {"x1", "x2"} and h["x1"].shape == (4000, 4)


def test_unconditional_is_logsumexp_over_classes():
    net = random_net(*DENSE, "01", seed=6, scale=1.0)
    x0, _ = random_batch(net, 3, seed=1)
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    torch.manual_seed(0)
    res = ais_log_marginal(net, x0, 200, 32, class_prior=prior)
    exact = torch.stack([exact_log_likelihood(net, x0, torch.full((3,), c)) for c in range(3)], 1)
    truth = (exact + prior.log()).logsumexp(1)
    assert ((res.estimate - truth).abs() <= 3 * res.stderr + 0.02).all()
    assert torch.allclose(res.estimate, (res.per_class + prior.log()).logsumexp(1))


def test_schedules():
    for name in ("sigmoid", "linear"):
        b = annealing_schedule(name, 10)
        assert b.shape == (11,) and b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    assert torch.equal(annealing_schedule(torch.tensor([0.0, 0.5, 1.0]), 99), torch.tensor([0.0, 0.5, 1.0]).double())
    with pytest.raises(ValueError, match="rise monotonically"):
        annealing_schedule(torch.tensor([0.0, 0.7, 0.5, 1.0]), 3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        annealing_schedule("cubic", 3)


def test_bad_inputs_are_clear_errors():
    net = random_net(*DENSE, "01")
    x0, y = random_batch(net, 2)
    with pytest.raises(ValueError, match="binary images.*binarize"):
        ais_log_likelihood(net, x0 * 0.5, y, 2, 2)
    with pytest.raises(ValueError, match="num_chains"):
        ais_log_likelihood(net, x0, y, 2, 0)
    with pytest.raises(ValueError, match="num_steps"):
        ais_log_likelihood(net, x0, y, 0, 2)
    with pytest.raises(ValueError, match="start must be"):
        ais_log_likelihood(net, x0, y, 2, 2, start="posterior")
    flat = DCIM.from_spec([3], input_shape=(6,))
    with pytest.raises(ValueError, match="no hidden layers"):
        ais_log_likelihood(flat, x0, torch.zeros(2, dtype=torch.long), 2, 2)


def test_fast_softplus_forms_are_exact():
    x = torch.linspace(-90, 90, 20001, dtype=torch.float64)
    assert torch.allclose(softplus(x), torch.nn.functional.softplus(x, threshold=1000), atol=1e-12, rtol=0)
    rows = torch.randn(3, 2500, dtype=torch.float64) * 30       # more terms than one float64 product holds
    ref = torch.nn.functional.logsigmoid(rows.abs()).sum(-1)
    assert torch.allclose(log_sigmoid_abs_sum(rows), ref, atol=1e-9, rtol=0)
    assert math.isfinite(float(log_sigmoid_abs_sum(rows.float()).sum()))
    # float32 rows: products of up to 100 factors in float32, then float64
    for m in (784, 2500, 97):
        rows = torch.randn(3, m, dtype=torch.float64) * 30
        ref = torch.nn.functional.logsigmoid(rows.abs()).sum(-1)
        assert torch.allclose(log_sigmoid_abs_sum(rows.float()).double(), ref, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("units,dtype", [("01", torch.float64), ("pm1", torch.float32)])
def test_lattice_update_matches_the_general_path(units, dtype, monkeypatch):
    """The conv layers' strided-view update draws what the index-gather path draws, with the
    same conditionals: on a net too big to enumerate, with many channels and both directions."""
    spec = [(3, 1, 4, 1), (3, 1, 5, 1), (2, 2, 3, 0), 5, 3]      # x1, x2: 4 and 5 channels of 8x8
    net = random_net(spec, (1, 8, 8), units, seed=3, scale=0.7).to(dtype)
    x0, y = random_batch(net, 3, seed=1)
    x0 = x0.to(dtype)
    weights = {"forward": 0.4, "forward_end": 0.4, "reverse": 0.6, "reverse_end": 0.6}
    runs = []
    for general in (False, True):
        if general:
            monkeypatch.setattr(ChainEnergy, "_lattice", lambda *a, **k: False)
        energy = ChainEnergy(net, x0, y)
        torch.manual_seed(0)
        bits = {k: torch.bernoulli(torch.full((2, 3, math.prod(net.shapes[k])), 0.5, dtype=dtype))
                for k in energy.hidden}
        probs = {k: torch.zeros_like(v) for k, v in bits.items()}
        for _ in range(2):
            energy.sweep(bits, weights, probs)
        runs.append((bits, probs))
    (b1, p1), (b2, p2) = runs
    for k in b1:
        assert torch.equal(b1[k], b2[k])
        assert torch.allclose(p1[k], p2[k], atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)
    assert 0.05 < float(torch.cat([p.flatten() for p in p1.values()]).mean()) < 0.95


def test_chain_sample_is_the_ancestral_draw_and_stops_at_upto():
    from pyro_dcim.chain import Chain

    net = random_net([5, 4, 3, 2], (6,), "01", seed=1, scale=1.5)
    chain = Chain(net, "reverse")
    y = torch.tensor([0, 1])
    g = torch.Generator().manual_seed(0)
    part = chain.sample(chain.start_state(None, y), 3, g, upto=2)
    assert sorted(part) == [2, 3] and part[2].shape == (3, 2, 4)
    # the top layer's frequencies match its conditional given the class
    many = chain.sample(chain.start_state(None, y), 20000, torch.Generator().manual_seed(1), upto=3)[3]
    p = torch.sigmoid(net.conditional_logits(3, net.class_state(y), "reverse")).flatten(1)
    assert torch.allclose(many.mean(0), p, atol=4 * (0.25 / 20000) ** 0.5)


def test_an_interrupted_ais_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    net = random_net(*DENSE, "01", seed=2, scale=1.5)
    x0, y = random_batch(net, 3, seed=2)
    kw = dict(num_steps=12, num_chains=4, chunk_size=2)
    torch.manual_seed(0)
    whole = ais_log_likelihood(net, x0, y, **kw)

    ckpt = tmp_path / "ais.pt"
    real_sweep, calls = ChainEnergy.sweep, []

    def failing_sweep(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 16:                 # inside the second chunk (11 sweeps per chunk)
            raise KeyboardInterrupt
        return real_sweep(self, *args, **kwargs)

    monkeypatch.setattr(ChainEnergy, "sweep", failing_sweep)
    torch.manual_seed(0)
    began = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ais_log_likelihood(net, x0, y, **kw, checkpoint=ckpt, checkpoint_every=2)
    assert ckpt.is_file()
    monkeypatch.setattr(ChainEnergy, "sweep", real_sweep)
    with pytest.raises(ValueError, match="other settings.*num_chains"):
        ais_log_likelihood(net, x0, y, num_steps=12, num_chains=5, chunk_size=2, checkpoint=ckpt)
    torch.manual_seed(123)                   # the checkpoint's random state wins
    resumed = ais_log_likelihood(net, x0, y, **kw, checkpoint=ckpt, checkpoint_every=2)
    assert torch.equal(resumed.log_weights, whole.log_weights)
    assert not ckpt.exists()
    # the seconds of both parts, each counted once
    assert 0 < resumed.seconds <= time.perf_counter() - began


def test_an_interrupted_bdmc_run_resumes_in_either_direction(tmp_path, monkeypatch):
    net = random_net(*DENSE, "01", seed=3, scale=1.5)
    kw = dict(num_images=3, num_steps=10, num_chains=3, seed=4)
    torch.manual_seed(0)
    whole = bdmc(net, **kw)
    prefix = tmp_path / "bdmc"
    real_sweep = ChainEnergy.sweep
    for stop in (5, 11, 16):                 # inside the forward run; early in the reverse one; later in it
        def failing_sweep(self, *args, calls=[], stop=stop, **kwargs):  # noqa: B006 (a fresh list per stop)
            calls.append(1)
            if len(calls) == stop:
                raise KeyboardInterrupt
            return real_sweep(self, *args, **kwargs)

        monkeypatch.setattr(ChainEnergy, "sweep", failing_sweep)
        torch.manual_seed(0)
        with pytest.raises(KeyboardInterrupt):
            bdmc(net, **kw, checkpoint=prefix, checkpoint_every=2)
        assert (stop > 9) == Path(f"{prefix}.forward-done").is_file()   # 9 sweeps per direction
        monkeypatch.setattr(ChainEnergy, "sweep", real_sweep)
        torch.manual_seed(99)                # the checkpoints' random states win
        resumed = bdmc(net, **kw, checkpoint=prefix, checkpoint_every=2)
        assert torch.equal(resumed.lower, whole.lower) and torch.equal(resumed.upper, whole.upper), stop
        assert not list(tmp_path.iterdir())  # every checkpoint file is gone
    with pytest.raises(ValueError, match="fixed seed"):
        bdmc(net, 2, 5, 2, seed=None, checkpoint=prefix)


def test_too_few_chains_for_khat_are_flagged_with_one_warning():
    """Below 21 chains the error bar cannot be checked: .reliable is False and one warning names the fix."""
    import warnings

    from pyro_dcim.inference.weights import UnreliableEstimateWarning

    net = random_net(*DENSE, "01", seed=4, scale=2.0)
    x0, y = random_batch(net, 3, seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ais_log_likelihood(net, x0, y, 5, 4)
    mine = [w for w in caught if issubclass(w.category, UnreliableEstimateWarning)]
    assert len(mine) == 1 and "4 chains" in str(mine[0].message) and "bdmc" in str(mine[0].message)
    assert mine[0].filename == __file__
    assert not res.reliable.any() and res.khat.isnan().all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ais_log_likelihood(net, x0, y, 50, 32)
    assert not [w for w in caught if "cannot be computed" in str(w.message)]
    assert not res.khat.isnan().any()
