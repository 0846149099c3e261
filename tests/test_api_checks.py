"""Bad input to the Python API is a ValueError that says what to fix, not a raw torch error later on;
the Gibbs kernel starts where the user says; warnings point at the user's own line."""

import warnings

import pytest
import torch
from _brute_force import random_batch, random_net
from pyro.infer import MCMC

from pyro_dcim import DCIM, SpecError, bidirectional_loss, discriminative_loss
from pyro_dcim.inference import DCIMGibbs, importance_marginals
from pyro_dcim.inference.weights import UnreliableEstimateWarning
from pyro_dcim.pyro_models import hidden_site

DENSE = ([3, 3, 3], (4,))


def _run(kernel, x0, y, **kwargs):
    MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True, **kwargs).run(x0, y)


@pytest.mark.parametrize("chains", [0, -1, 2.5, True])
def test_gibbs_refuses_a_chain_count_below_one(chains):
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        DCIMGibbs(random_net(*DENSE), num_chains=chains)


def test_gibbs_checks_its_data_although_mcmc_turns_validation_off():
    net = random_net(*DENSE)
    x0, y = random_batch(net, 2)
    with pytest.raises(ValueError, match=r"class labels in \[.*11\], but the network has 3 classes"):
        _run(DCIMGibbs(net, num_chains=2), x0, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="class labels"):
        _run(DCIMGibbs(net, num_chains=2), x0[:1], 11)          # a plain int is read as a label too
    with pytest.raises(ValueError, match="x0 holds 2 images but y holds 1 classes"):
        _run(DCIMGibbs(net, num_chains=2), x0, y[:1])
    with pytest.raises(ValueError, match="Gibbs sampling of the hidden posterior needs binary images.*binarize"):
        _run(DCIMGibbs(net, num_chains=2), x0 * 0.5 + 0.25, y)


def test_gibbs_starts_from_the_users_initial_params():
    """MCMC.run passes detached copies of the data, so the kernel cannot tell by identity whether they
    changed: the start given as MCMC(kernel, initial_params=...) must be the one the chains begin from."""
    net = random_net(*DENSE, seed=2)
    x0, y = random_batch(net, 2)
    kernel = DCIMGibbs(net, x0, y, num_chains=3)          # built on the very tensors run() gets
    start = {hidden_site(k): torch.ones(3, 2, *net.shapes[k], dtype=x0.dtype) for k in (1, 2)}
    seen = []
    sample = kernel.sample
    kernel.sample = lambda params: (seen.append({k: v.clone() for k, v in params.items()}), sample(params))[1]
    _run(kernel, x0, y, initial_params=start)
    assert all(torch.equal(seen[0][name], start[name]) for name in start)
    # a later run on other data draws its own start; on the same data (by value) it keeps the last one
    seen.clear()
    _run(kernel, 1 - x0, y)
    assert not all(torch.equal(seen[0][name], start[name]) for name in start)
    first = {k: v.clone() for k, v in kernel.initial_params.items()}
    seen.clear()
    _run(kernel, (1 - x0).clone(), y.clone())
    assert all(torch.equal(seen[0][name], first[name]) for name in first)


def test_gibbs_refuses_initial_params_of_the_wrong_shape_or_not_bits():
    net = random_net(*DENSE)
    x0, y = random_batch(net, 2)
    bad = {hidden_site(k): torch.ones(3, 2, *net.shapes[k], dtype=x0.dtype) for k in (1, 2)}
    with pytest.raises(ValueError, match=r"initial_params\['x1'\] must be bits shaped .* \(2, 2, 3\)"):
        _run(DCIMGibbs(net, num_chains=2), x0, y, initial_params=bad)
    half = {k: v[:2] * 0.5 for k, v in bad.items()}
    with pytest.raises(ValueError, match="must hold bits 0/1"):
        _run(DCIMGibbs(net, num_chains=2), x0, y, initial_params=half)


def test_reverse_mean_field_refuses_class_indices_with_an_extra_dimension():
    net = DCIM.from_spec([6, 10], input_shape=(1, 28, 28))
    y = torch.tensor([1, 2, 3, 4])
    assert net.reverse_mean_field(y).logits.shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"class indices must be shaped \(batch,\), got \(4, 1\)"):
        net.reverse_mean_field(y[:, None])


@pytest.mark.parametrize("loss", [bidirectional_loss, discriminative_loss])
def test_objectives_say_what_is_wrong_with_the_labels(loss):
    net = DCIM.from_spec([6, 10], input_shape=(1, 28, 28))
    x0, y = torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"y must be class indices shaped \(batch,\), got \(4, 1\); pass y.reshape"):
        loss(net, x0, y[:, None])
    with pytest.raises(TypeError, match="y must be integer class indices, got torch.float32"):
        loss(net, x0, y.float())
    with pytest.raises(ValueError, match="x0 holds 4 images but y holds 3 classes"):
        loss(net, x0, y[:3])
    with pytest.raises(ValueError, match="x0 holds 3 images but y holds 4 classes"):
        loss(net, x0[:3], y)


def test_a_convolution_window_wider_than_its_input_is_refused():
    with pytest.raises(SpecError, match=r"layer 1: convolution \(40, 1, 32\) does not fit its 28x28 input"):
        DCIM.from_spec([(40, 1, 32), 10], input_shape=(1, 28, 28))
    with pytest.raises(SpecError, match=r"layer 2: .*its 5x5 window must fit"):
        DCIM.from_spec([(2, 2, 4), (5, 1, 4), 10], input_shape=(1, 8, 8))      # 4x4 after the first layer
    DCIM.from_spec([(28, 1, 4, 0), 10], input_shape=(1, 28, 28))              # a window as wide as the image fits


def test_unreliable_estimate_warning_points_at_the_callers_line():
    """importance_marginals runs under torch.no_grad's decorator: a fixed stacklevel pointed into
    torch/utils/_contextlib.py instead of here."""
    torch.manual_seed(0)
    net = DCIM.from_spec([6, 5, 10], input_shape=(1, 28, 28))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 3)
    x0, y = torch.bernoulli(torch.rand(4, 1, 28, 28)), torch.randint(0, 10, (4,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importance_marginals(net, x0, 100, y=y)
    unreliable = [w for w in caught if issubclass(w.category, UnreliableEstimateWarning)]
    assert unreliable, "the heavy-tailed weights of this net should have been flagged"
    assert all(w.filename == __file__ for w in unreliable), [(w.filename, w.lineno) for w in unreliable]
