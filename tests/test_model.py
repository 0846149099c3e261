"""The mean-field passes (eq. 14-15, 17-18), the unit encodings (eq. 6-9) and the parameter tying."""

import pytest
import torch

from pyro_dcim import DCIM


def _net(units="01", spec=(6, 5, 3), input_shape=(8,)):
    torch.manual_seed(0)
    return DCIM.from_spec(list(spec), input_shape=input_shape, units=units).double()


def test_one_set_of_parameters():
    net = DCIM.from_spec([512, 512, 10], input_shape=(784,))
    names = {n for n, _ in net.named_parameters()}
    assert names == {"input_bias", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                     "layers.1.bias", "layers.2.weight", "layers.2.bias"}
    assert net.spec == [512, 512, 10] and net.input_shape == (784,) and net.num_classes == 10
    n_plain = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert sum(p.numel() for p in net.parameters()) == n_plain + 784  # only b^0 is extra


def test_forward_mean_field_is_the_sigmoid_dnn():
    net = _net()
    x0 = torch.rand(4, 8, dtype=torch.float64)
    W = [layer.weight for layer in net.layers]
    b = [layer.bias for layer in net.layers]
    h1 = torch.sigmoid(x0 @ W[0].T + b[0])
    h2 = torch.sigmoid(h1 @ W[1].T + b[1])
    mf = net.forward_mean_field(x0)
    assert torch.allclose(mf.hidden[0], h1) and torch.allclose(mf.hidden[1], h2)
    assert torch.allclose(mf.logits, h2 @ W[2].T + b[2])
    assert torch.allclose(net(x0), mf.logits)


def test_reverse_mean_field_uses_transposed_weights_and_shared_biases():
    net = _net()
    y = torch.tensor([0, 2, 1, 2])
    W = [layer.weight for layer in net.layers]
    b = [layer.bias for layer in net.layers]
    nu3 = torch.eye(3, dtype=torch.float64)[y]
    nu2 = torch.sigmoid(nu3 @ W[2] + b[1])
    nu1 = torch.sigmoid(nu2 @ W[1] + b[0])
    logits0 = nu1 @ W[0] + net.input_bias
    rev = net.reverse_mean_field(y)
    assert torch.allclose(rev.hidden[0], nu2) and torch.allclose(rev.hidden[1], nu1)
    assert torch.allclose(rev.logits, logits0)
    # from probabilities, and from a hidden layer
    assert torch.allclose(net.reverse_mean_field(nu3).logits, logits0)
    from_layer = net.reverse_mean_field(nu2, layer=2)
    assert len(from_layer.hidden) == 1 and torch.allclose(from_layer.logits, logits0)


def test_pm1_units_use_tanh_means_and_doubled_logits():
    net = _net("pm1")
    x0 = torch.rand(4, 8, dtype=torch.float64)
    W = [layer.weight for layer in net.layers]
    b = [layer.bias for layer in net.layers]
    h1 = torch.tanh((2 * x0 - 1) @ W[0].T + b[0])  # E[x^0] = 2 p - 1
    mf = net.forward_mean_field(x0)
    assert torch.allclose(mf.hidden[0], h1)
    assert torch.allclose(mf.hidden[1], torch.tanh(h1 @ W[1].T + b[1]))
    rev = net.reverse_mean_field(torch.tensor([1]), layer=None)
    a0 = rev.hidden[-1] @ W[0] + net.input_bias
    assert torch.allclose(rev.logits, 2 * a0)  # p(x=+1) = σ(2a), eq. (9)


def test_reverse_from_class_indices_equals_per_image_pass():
    net = _net(spec=((3, 2, 4), 7, 5), input_shape=(1, 9, 9))
    y = torch.tensor([4, 0, 4, 1, 3, 3])
    fast = net.reverse_mean_field(y)
    slow = net.reverse_mean_field(torch.eye(5, dtype=torch.float64)[y])
    assert torch.allclose(fast.logits, slow.logits)
    assert all(torch.allclose(a, b) for a, b in zip(fast.hidden, slow.hidden))


@pytest.mark.parametrize("units", ["01", "pm1"])
def test_the_conditionals_of_both_chains(units):
    """eq. (6-9) forward, (17-18) reverse with the reverse copy when untied, (15) the class."""
    net = _net(units, spec=(5, 3), input_shape=(4,)).untie()
    with torch.no_grad():
        for layer in net.layers:
            layer.reverse_weight.add_(torch.randn_like(layer.reverse_weight))
    c = 1.0 if units == "01" else 2.0
    assert net.units.logit_scale == c
    (w1, w2), (r1, r2) = [lay.weight for lay in net.layers], [lay.reverse_weight for lay in net.layers]
    b0, b1, b2 = (net.bias(k) for k in range(3))
    x0 = net.units.state(torch.rand(6, 4, dtype=torch.float64))
    x1 = net.units.state(torch.randint(0, 2, (6, 5)).double())
    onehot = net.class_state(torch.tensor([0, 1, 2, 0, 1, 2]))
    torch.testing.assert_close(net.preactivation(1, x0), x0 @ w1.T + b1)
    torch.testing.assert_close(net.conditional_logits(1, x0), c * (x0 @ w1.T + b1))
    torch.testing.assert_close(net.conditional_logits(2, x1), x1 @ w2.T + b2)    # class logits: no c
    torch.testing.assert_close(net.preactivation(1, onehot, "reverse"), onehot @ r2 + b1)
    torch.testing.assert_close(net.conditional_logits(0, x1, "reverse"), c * (x1 @ r1 + b0))
    assert net.parent_layer(1) is net.layers[0] and net.parent_layer(1, "reverse") is net.layers[1]
    # the first-order passes are these conditionals iterated on means
    mf = net.forward_mean_field(net.units.bit_probs(x0))
    torch.testing.assert_close(mf.logits, net.conditional_logits(2, net.units.mean(net.preactivation(1, x0))))
    with pytest.raises(ValueError, match="direction"):
        net.preactivation(1, x1, "sideways")


def test_bad_arguments():
    net = _net()
    with pytest.raises(ValueError, match="hidden layer"):
        net.reverse_mean_field(torch.rand(2, 6), layer=0)
    with pytest.raises(ValueError, match="columns"):
        net.reverse_mean_field(torch.rand(2, 4))
    with pytest.raises(ValueError, match="units"):
        DCIM.from_spec([3], input_shape=(4,), units="binary")


def test_pyro_models_do_not_import_the_model_that_builds_on_them():
    """No import cycle: DCIM inherits the models' methods; pyro_models imports model only for types."""
    import ast
    import inspect
    import subprocess
    import sys

    import pyro_dcim.pyro_models

    tree = ast.parse(inspect.getsource(pyro_dcim.pyro_models))
    runtime = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {node.module or "" for node in runtime if isinstance(node, ast.ImportFrom)}
    assert "model" not in names, names
    # the methods exist however the class is reached, with nothing else imported first
    code = ("from pyro_dcim import DCIM; import torch; net = DCIM.from_spec([3, 2], input_shape=(4,)); "
            "print(tuple(net.forward_model(torch.rand(5, 4)).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)   # loaded CPUs
    assert out.returncode == 0 and out.stdout.strip() == "(5,)", out.stderr
    net = DCIM.from_spec([3, 2], input_shape=(4,))
    assert net.forward_model(torch.rand(5, 4)).shape == (5,)
