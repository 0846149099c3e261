"""Exact enumeration against brute-force summation over joint states; mean field vs exact."""

import pytest
import torch
from _brute_force import brute_force, random_batch, random_net, single_thread

from pyro_dcim.inference import (
    LayerTooWideError,
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
    mean_field_marginals,
)
from pyro_dcim.inference import exact as exact_module

NETS = {
    "dense": ([4, 3, 3], (5,)),
    "conv": ([(2, 1, 2, 0), (2, 1, 1, 0), 3, 2], (1, 3, 3)),   # x1: 2x2x2, x2: 1x1x1, x3: 3
}

pytestmark = pytest.mark.usefixtures(single_thread.__name__)


@pytest.fixture(params=[(name, units) for name in NETS for units in ("01", "pm1")], ids=lambda p: "-".join(p))
def net_and_batch(request):
    name, units = request.param
    spec, shape = NETS[name]
    net = random_net(spec, shape, units, seed=3, scale=1.5)
    return net, *random_batch(net, 4, seed=1)


def _close(a, b):
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()


def test_forward_and_reverse_marginals_equal_brute_force(net_and_batch):
    net, x0, y = net_and_batch
    ref = brute_force(net, x0, y, "forward")
    got = exact_marginals(net, x0)
    for a, b in zip(got.hidden, ref["hidden"]):
        _close(a, b)
    _close(got.classes, ref["classes"])
    assert got.stderr is None and got.method == "exact"

    ref = brute_force(net, x0, y, "reverse")
    got = exact_marginals(net, y=y, direction="reverse")
    for a, b in zip(got.hidden, ref["hidden"]):
        _close(a, b)
    _close(got.image, ref["image"])


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_posterior_and_evidence_equal_brute_force(net_and_batch, direction):
    net, x0, y = net_and_batch
    ref = brute_force(net, x0, y, direction, posterior=True)
    got = exact_posterior(net, x0, y, direction=direction)
    for a, b in zip(got.hidden, ref["hidden"]):
        _close(a, b)
    _close(got.log_evidence, ref["log_evidence"])
    if direction == "reverse":
        _close(exact_log_likelihood(net, x0, y), ref["log_evidence"])
    else:   # log p(y | x0) is the log of the exact class marginal
        _close(got.log_evidence, exact_marginals(net, x0).classes[torch.arange(len(y)), y].log())


def test_small_chunks_give_the_same_answer(monkeypatch, net_and_batch):
    net, x0, y = net_and_batch
    whole = exact_posterior(net, x0, y, direction="reverse")
    monkeypatch.setattr(exact_module, "_CHUNK_ELEMENTS", 3)
    chunked = exact_posterior(net, x0, y, direction="reverse")
    for a, b in zip(whole.hidden, chunked.hidden):
        _close(a, b)
    _close(whole.log_evidence, chunked.log_evidence)
    _close(exact_marginals(net, x0).classes, brute_force(net, x0, y)["classes"])


def test_first_hidden_layer_mean_field_is_exact_deeper_layers_are_not():
    net = random_net([4, 3, 3], (6,), seed=2, scale=2.0)
    x0, y = random_batch(net, 8, seed=2)
    exact, mf = exact_marginals(net, x0), mean_field_marginals(net, x0)
    _close(mf.hidden[0], exact.hidden[0])
    assert (mf.hidden[1] - exact.hidden[1]).abs().max() > 0.05      # large weights: eq. (2) is visibly wrong
    assert (mf.classes - exact.classes).abs().max() > 0.05
    # reverse: the layer just below the class is factorised given it
    exact, mf = exact_marginals(net, y=y, direction="reverse"), mean_field_marginals(net, y=y, direction="reverse")
    _close(mf.hidden[-1], exact.hidden[-1])
    assert (mf.image - exact.image).abs().max() > 0.05


def test_too_wide_layer_names_layer_width_and_limit():
    net = random_net([3, 17, 2], (4,))
    x0, y = random_batch(net, 2)
    for call in (lambda: exact_marginals(net, x0), lambda: exact_posterior(net, x0, y),
                 lambda: exact_log_likelihood(net, x0, y), lambda: exact_marginals(net, y=y, direction="reverse")):
        with pytest.raises(LayerTooWideError, match=r"hidden layer x2 has 17 units .*limit of 16"):
            call()
    with pytest.raises(LayerTooWideError, match=r"x1 has 3 units .*limit of 2"):
        exact_marginals(net, x0, max_units=2)
    assert issubclass(LayerTooWideError, ValueError)
    # a count of states too long to print as an integer (over 4300 digits) is written as a power
    wide = random_net([20000, 2], (4,))
    with pytest.raises(LayerTooWideError, match=r"x1 has 20000 units .*\(2\^20000 states\)"):
        exact_marginals(wide, x0.new_zeros(1, 4))


def test_log_probabilities_keep_float64_precision_for_large_logits():
    """``F.softplus`` returns ``l`` above ``l = 20`` (an error of ``e^-20``); the engines' and the Pyro
    sites' form is exact."""
    from pyro_dcim.chain import bernoulli_log_prob

    logits = torch.tensor([-800.0, -40.0, -21.0, -1e-3, 0.0, 3.0, 19.0, 21.0, 25.0, 40.0, 800.0], dtype=torch.float64)
    reference = torch.logaddexp(torch.zeros_like(logits), logits)   # log(1 + e^l), exact
    for target in (torch.ones_like(logits), torch.zeros_like(logits), torch.full_like(logits, 0.3)):
        expected = target * logits - reference
        assert torch.allclose(bernoulli_log_prob(logits, target), expected, rtol=1e-15, atol=0)
    from pyro_dcim.pyro_models import _bernoulli

    for target in (torch.ones_like(logits), torch.full_like(logits, 0.3)):   # the Pyro sites' log-prob too
        expected = (target * logits - reference).sum()
        assert torch.allclose(_bernoulli(logits, 1, soft=True).log_prob(target), expected, rtol=1e-15, atol=0)
    enum = exact_module._Enumerator(random_net([2, 3], (4,)), "forward", 16)
    table = enum.log_bernoulli_table(1, logits[None, 8:10])          # logits 25, 40
    expected = enum.bits[1] @ logits[8:10] - reference[8:10].sum()
    assert torch.allclose(table[0], expected, rtol=1e-15, atol=0)


def test_single_layer_net_is_an_rbm_and_needs_no_enumeration():
    net = random_net([3], (4,), scale=1.0)
    x0, y = random_batch(net, 5)
    got = exact_marginals(net, x0)
    assert got.hidden == [] and torch.allclose(got.classes, net(x0).softmax(-1))
    ll = exact_log_likelihood(net, x0, y)
    expected = torch.distributions.Bernoulli(logits=net.reverse_mean_field(y).logits).log_prob(x0).sum(-1)
    _close(ll, expected.detach())


def test_inputs_are_checked_at_the_public_api():
    net = random_net([3, 2, 3], (4,))
    x0, y = random_batch(net, 2)
    with pytest.raises(ValueError, match=r"values in \[0, 2\]"):
        exact_marginals(net, 2 * x0)
    with pytest.raises(ValueError, match="class labels in"):
        exact_posterior(net, x0, y + 3)
    with pytest.raises(ValueError, match="has shape"):
        exact_log_likelihood(net, x0[:, :3], y)
