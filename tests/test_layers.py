"""Adjointness <W x, y> = <x, Wᵀ y> of every tied layer, and exact shape round trips."""

import pytest
import torch

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.layers import TiedConv2d, TiedDense
from pyro_dcim.spec import ConvSpec, conv_output_size


def _check_adjoint(layer, in_shape, out_shape, batch=(3,)):
    x = torch.randn(*batch, *in_shape, dtype=torch.float64)
    y = torch.randn(*batch, *out_shape, dtype=torch.float64)
    wx = layer(x) - layer.bias  # forward adds b^k; the adjoint identity is about W alone
    wty = layer.adjoint(y)
    assert wx.shape == y.shape and wty.shape == x.shape
    lhs, rhs = (wx * y).sum(), (x * wty).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-5, atol=1e-5), (lhs, rhs)


@pytest.mark.parametrize("in_shape, units", [((7,), 5), ((4, 5, 3), 6)])
def test_dense_adjoint(in_shape, units):
    layer = TiedDense(in_shape, units).double()
    _check_adjoint(layer, in_shape, (units,))
    _check_adjoint(layer, in_shape, (units,), batch=(2, 3))  # particle x data dimensions


@pytest.mark.parametrize("in_shape, conv", [
    ((1, 28, 28), ConvSpec(3, 1, 32, 1)),
    ((2, 7, 7), ConvSpec(2, 2, 4, 0)),    # drops the last row and column
    ((3, 13, 17), ConvSpec(3, 2, 5, 1)),
    ((2, 9, 10), ConvSpec(4, 3, 3, 0)),
    ((1, 8, 8), ConvSpec(5, 1, 2, 0)),
])
def test_conv_adjoint_including_strides_and_odd_sizes(in_shape, conv):
    out_shape = (conv.kernels, *(conv_output_size(s, conv.window, conv.stride, conv.padding) for s in in_shape[1:]))
    layer = TiedConv2d(in_shape, conv, out_shape).double()
    _check_adjoint(layer, in_shape, out_shape)
    _check_adjoint(layer, in_shape, out_shape, batch=(2, 3))


@pytest.mark.parametrize("spec, input_shape", [
    (PAPER_SPECS["cnn"], (1, 28, 28)),
    (PAPER_SPECS["cnn"], (1, 29, 31)),
    ([(3, 2, 4), (2, 2, 3), 6, 4], (3, 13, 17)),
    (PAPER_SPECS["dense"], (784,)),
    ([16, 3], (1, 5, 7)),
])
def test_network_adjoint_and_shape_round_trip(spec, input_shape):
    net = DCIM.from_spec(spec, input_shape=input_shape).double()
    for k, layer in enumerate(net.layers, start=1):
        _check_adjoint(layer, net.shapes[k - 1], net.shapes[k])
    x0 = torch.rand(2, *input_shape, dtype=torch.float64)
    mf = net.forward_mean_field(x0)
    assert [tuple(h.shape[1:]) for h in mf.hidden] == net.shapes[1:-1]
    rev = net.reverse_mean_field(mf.logits.softmax(-1))
    assert rev.logits.shape == x0.shape
    assert [tuple(h.shape[1:]) for h in rev.hidden] == net.shapes[-2:0:-1]


def test_layers_own_their_parameters_and_reset_them_as_pytorch_does():
    """``reset_parameters`` draws what ``nn.Linear`` / ``nn.Conv2d`` draw from the same seed, so
    ``--init torch`` (and every scheme built on it) gives the tensors it gave with those modules."""
    from torch import nn

    spec = ConvSpec(3, 2, 5, 1)
    for make, reference in [(lambda: TiedDense((2, 4, 4), 7), lambda: nn.Linear(32, 7)),
                            (lambda: TiedConv2d((2, 9, 9), spec, (5, 5, 5)), lambda: nn.Conv2d(2, 5, 3, 2, 1))]:
        torch.manual_seed(3)
        ours = make()
        torch.manual_seed(3)
        ref = reference()
        assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
        assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias.flatten(), ref.bias)
        before = ours.weight.detach().clone()
        ours.reset_parameters()
        assert not torch.equal(ours.weight, before) and ours.weight.shape == before.shape


def test_checkpoints_with_the_former_parameter_names_load():
    """State dicts from when the layers held an ``nn.Linear`` / ``nn.Conv2d`` (``layers.0.conv.weight``,
    a conv bias of shape (K,)) load into the layers that own their parameters."""
    torch.manual_seed(0)
    net = DCIM.from_spec([(3, 2, 4), 6, 3], input_shape=(1, 8, 8))
    legacy = {}
    for name, value in net.state_dict().items():
        inner = "conv" if name.startswith("layers.0.") else "linear"
        if name.startswith("layers."):
            k, leaf = name.split(".")[1:]
            name = f"layers.{k}.{inner}.{leaf}"
            value = value.flatten() if inner == "conv" and leaf == "bias" else value
        legacy[name] = value.clone()
    fresh = DCIM.from_spec([(3, 2, 4), 6, 3], input_shape=(1, 8, 8))
    fresh.load_state_dict(legacy)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
