"""Generation: the sample-layer mode's temperature draws its sampled layers from ``sigmoid(a / T)``."""

import pytest
import torch
from _brute_force import random_net

from pyro_dcim.chain import Chain
from pyro_dcim.generate import class_grid, generate


def test_temperature_one_is_the_model_bit_for_bit():
    net = random_net([5, 4, 3], (8,), seed=1)
    classes = class_grid(3, 4)
    assert torch.equal(generate(net, classes, "sample-layer", seed=2),
                       generate(net, classes, "sample-layer", seed=2, temperature=1.0))
    assert not torch.equal(generate(net, classes, "sample-layer", seed=2),
                           generate(net, classes, "sample-layer", seed=2, temperature=2.0))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_a_layer_is_drawn_from_the_tempered_conditional(temperature):
    """``x^{n-1}`` given the class is factorised (eq. 17): its bit frequencies are ``sigmoid(a / T)``."""
    net = random_net([5, 4, 3], (8,), seed=1, scale=1.5)
    chain, n = Chain(net, "reverse"), 20000
    classes = torch.full((n,), 1)
    bits = chain.sample(chain.start_state(None, classes), 1, torch.Generator().manual_seed(0), upto=2,
                        temperature=temperature)[2][0]
    p = torch.sigmoid(net.conditional_logits(2, net.class_state(torch.tensor([1])), "reverse")[0] / temperature)
    se = (p * (1 - p) / n).sqrt()
    assert ((bits.mean(0) - p).abs() <= 4 * se + 1e-9).all()
    untempered = torch.sigmoid(net.conditional_logits(2, net.class_state(torch.tensor([1])), "reverse")[0])
    assert ((bits.mean(0) - untempered).abs() > 4 * se).any()        # the temperature did something


def test_temperature_is_checked():
    net = random_net([5, 4, 3], (8,), seed=1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(net, [0], "sample-layer", temperature=0.0)
    with pytest.raises(ValueError, match="not to 'ancestral'"):
        generate(net, [0], "ancestral", temperature=2.0)
