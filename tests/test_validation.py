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
