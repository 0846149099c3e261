"""The Python API refuses bad input with a message that says what to fix."""

import pyro
import pytest
import torch

from pyro_dcim import DCIM, bidirectional_loss


@pytest.fixture
def net():
    return DCIM.from_spec([(3, 2, 4), 6, 3], input_shape=(1, 8, 8))


@pytest.mark.parametrize("x0, error, message", [
    (torch.full((2, 1, 8, 8), 1.5), ValueError, r"values in \[1.5, 1.5\].*\[0, 1\]"),
    (torch.full((2, 1, 8, 8), -0.1), ValueError, r"\[0, 1\]"),
    (torch.full((2, 1, 8, 8), float("nan")), ValueError, "NaN"),
    (torch.zeros(2, 1, 9, 9), ValueError, r"shape \(2, 1, 9, 9\).*\(1, 8, 8\)"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TypeError, "divide uint8 images by 255"),
])
def test_bad_images(net, x0, error, message):
    with pytest.raises(error, match=message):
        net.forward_mean_field(x0)
    with pytest.raises(error, match=message):
        net.forward_model(x0)


def test_bad_labels_and_states(net):
    x0 = torch.rand(3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\].*3 classes"):
        bidirectional_loss(net, x0, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"labels in \[-1, 1\]"):
        net.reverse_mean_field(torch.tensor([-1, 0, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        bidirectional_loss(net, x0, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="state of layer 2"):
        net.reverse_mean_field(torch.rand(3, 5), layer=2)


def test_value_checks_follow_pyros_switch(net):
    x0 = torch.full((2, 1, 8, 8), 2.0)
    with pyro.validation_enabled(False):
        assert net.forward_mean_field(x0).logits.shape == (2, 3)  # unchecked on the hot path
    with pytest.raises(ValueError):
        net.forward_mean_field(x0)


def test_images_of_another_dtype_say_what_to_pass(net):
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    loss = lambda x: bidirectional_loss(net, x, torch.tensor([0, 1]))  # noqa: E731
    for call in (net.forward_mean_field, net, net.forward_model, loss):
        with pytest.raises(TypeError, match=r"x0 is torch.float64 but the network's parameters are torch.float32; "
                                            r"pass x0.to\(torch.float32\)"):
            call(x0)
    assert net.double().forward_mean_field(x0).logits.dtype == torch.float64


def test_classes_as_ints_and_lists_are_taken_one_hot_rows_are_refused(net):
    by_tensor = net.reverse_mean_field(torch.tensor([1, 2])).logits
    assert torch.equal(net.reverse_mean_field([1, 2]).logits, by_tensor)
    assert torch.allclose(net.reverse_mean_field(2).logits, by_tensor[1])
    assert net.reverse_model([1, 2]).shape == (2, 1, 8, 8)
    from pyro_dcim.generate import generate

    assert torch.equal(generate(net, [1, 2]), generate(net, torch.tensor([1, 2])))
    x0 = torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"y must be a torch.Tensor of class indices, got list; pass torch.tensor\(y\)"):
        bidirectional_loss(net, x0, [0, 1])
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3)
    for call in (lambda: bidirectional_loss(net, x0, one_hot), lambda: net.reverse_mean_field(one_hot),
                 lambda: net.forward_model(x0, one_hot)):
        with pytest.raises(ValueError, match=r"one-hot rows; pass class indices y.argmax\(-1\)"):
            call()
    # class probabilities stay the reverse pass's other input
    assert torch.allclose(net.reverse_mean_field(one_hot.float()).logits,
                          net.reverse_mean_field(torch.tensor([0, 2])).logits)
    with pytest.raises(TypeError, match="a tensor, an int or a list of ints"):
        net.reverse_mean_field("two")
