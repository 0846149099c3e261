"""Data-dependent initialisation: centred pre-activations of the set spread, b^0 = logit(mean image)."""

import pytest
import torch

from pyro_dcim import DCIM
from pyro_dcim.init import data_dependent_init, init_input_bias, initialise


@pytest.mark.parametrize("units, target", [("01", 2.0), ("pm1", 1.0)])
@pytest.mark.parametrize("spec, shape", [([(3, 1, 4), (2, 2, 6), 12, 5], (1, 10, 10)), ([20, 15, 5], (30,))])
def test_preactivations_are_centred_with_the_set_spread(units, target, spec, shape):
    torch.manual_seed(0)
    net = DCIM.from_spec(spec, shape, units=units).double()
    x0 = torch.rand(256, *shape, dtype=torch.float64) ** 2
    before = net.layers[-1].weight.clone()
    data_dependent_init(net, x0)
    init_input_bias(net, x0)
    mf = net.forward_mean_field(x0)
    for a in mf.preactivations:
        reduce = [0] + list(range(2, a.dim()))
        assert torch.allclose(a.mean(reduce), torch.zeros((), dtype=a.dtype), atol=1e-9)
        assert abs(float((a - a.mean(reduce, keepdim=True)).std().detach()) - target) < 0.15 * target
    assert torch.equal(net.layers[-1].weight, before)  # the class layer keeps its initialisation
    image_p = torch.sigmoid(net.units.bit_logits(net.input_bias))
    assert torch.allclose(image_p, x0.mean(0).clamp(1e-3, 1 - 1e-3))


def test_schemes_and_errors():
    torch.manual_seed(0)
    net = DCIM.from_spec([20, 5], (30,))
    initialise(net, "glorot-sigmoid", torch.rand(8, 30))
    bound = 4.0 * (6 / (30 + 20)) ** 0.5
    assert float(net.layers[0].weight.detach().abs().max()) <= bound and not net.layers[0].bias.detach().any()
    with pytest.raises(ValueError, match="init must be one of"):
        initialise(net, "he", torch.rand(8, 30))
