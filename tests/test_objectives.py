"""The three objectives: their parts, their settings, and that optimising them works."""

import math

import pytest
import torch
import torch.nn.functional as F

from pyro_dcim import DCIM, bidirectional_loss, discriminative_loss, sampled_layer_loss
from pyro_dcim.objectives import get_objective


def _batch(input_shape=(1, 8, 8), n=32, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    proto = torch.rand(classes, *input_shape, generator=g)
    x0 = (proto[y] + 0.2 * torch.rand(n, *input_shape, generator=g)).clamp(0, 1)
    return x0, y


def test_parts_are_the_cross_entropies():
    torch.manual_seed(0)
    net = DCIM.from_spec([(3, 2, 4), 16, 4], input_shape=(1, 8, 8))
    x0, y = _batch()
    parts = bidirectional_loss(net, x0, y, reverse_weight=0.5, reduction="mean")
    ce = F.cross_entropy(net(x0), y)
    bce = F.binary_cross_entropy_with_logits(net.reverse_mean_field(y).logits, x0, reduction="none")
    assert torch.isclose(parts.forward_nll, ce)
    assert torch.isclose(parts.reverse_nll_sum, bce.flatten(1).sum(1).mean())
    assert torch.isclose(parts.reverse_nll_per_pixel, bce.mean())
    assert torch.isclose(parts.total, ce + 0.5 * bce.mean())
    summed = bidirectional_loss(net, x0, y, reverse_weight=0.5, reduction="sum")
    assert torch.isclose(summed.total, ce + 0.5 * bce.flatten(1).sum(1).mean())
    disc = discriminative_loss(net, x0, y)
    assert torch.isclose(disc.total, ce) and torch.isclose(disc.reverse_nll_sum, parts.reverse_nll_sum)
    assert math.isnan(float(discriminative_loss(net, x0, y, report_reverse=False).reverse_nll_sum))
    with pytest.raises(ValueError, match="reduction"):
        bidirectional_loss(net, x0, y, reduction="median")
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("no-such-objective")


@pytest.mark.parametrize("name", ["discriminative", "bidirectional", "sampled-layer"])
@pytest.mark.parametrize("spec, input_shape", [([(3, 2, 4), 16, 4], (1, 8, 8)), ([32, 16, 4], (64,))])
def test_each_objective_decreases_on_a_fixed_batch(name, spec, input_shape):
    torch.manual_seed(1)
    net = DCIM.from_spec(spec, input_shape=input_shape)
    x0, y = _batch(input_shape)
    loss = get_objective(name)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)

    def evaluate():
        torch.manual_seed(123)  # the same sample x̃ for the sampled-layer objective
        with torch.no_grad():
            return loss(net, x0, y)

    before = evaluate()
    for _ in range(60):
        opt.zero_grad()
        loss(net, x0, y).total.backward()
        opt.step()
    after = evaluate()
    assert float(after.total) < 0.8 * float(before.total)
    assert float(after.forward_nll) < float(before.forward_nll)
    if name != "discriminative":
        assert float(after.reverse_nll_per_pixel) < float(before.reverse_nll_per_pixel)


def test_sampled_layer_passes_no_gradient_through_the_sample():
    torch.manual_seed(2)
    net = DCIM.from_spec([6, 5, 3], input_shape=(8,)).double()
    x0, y = _batch((8,), n=10, classes=3)
    x0 = x0.double()

    def grads(fn, **kw):
        net.zero_grad()
        fn(net, x0, y, **kw).total.backward()
        return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}

    g22 = grads(sampled_layer_loss, layer=2, generator=torch.Generator().manual_seed(0))
    g_disc = grads(discriminative_loss)
    # b^2 reaches the reverse term only through the sampled x̃^2: its gradient is the forward one alone
    assert torch.allclose(g22["layers.1.bias"], g_disc["layers.1.bias"])
    # W^3 and b^3 are above the sampled layer; W^1, W^2, b^0, b^1 do get reverse gradients
    assert torch.allclose(g22["layers.2.weight"], g_disc["layers.2.weight"])
    assert not torch.allclose(g22["layers.0.weight"], g_disc["layers.0.weight"])
    assert g22["input_bias"].abs().sum() > 0 and g_disc["input_bias"].abs().sum() == 0
    # with layer=1 the reverse term touches only W^1 and b^0
    g22_1 = grads(sampled_layer_loss, layer=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g22_1["layers.1.weight"], g_disc["layers.1.weight"])
    assert torch.allclose(g22_1["layers.0.bias"], g_disc["layers.0.bias"])
    with pytest.raises(ValueError, match="hidden layer"):
        sampled_layer_loss(net, x0, y, layer=3)


def test_sampled_layer_reverse_term_is_the_reverse_pass_from_the_sample():
    torch.manual_seed(3)
    net = DCIM.from_spec([6, 5, 3], input_shape=(8,), units="pm1").double()
    x0, y = _batch((8,), n=10, classes=3)
    x0 = x0.double()
    parts = sampled_layer_loss(net, x0, y, generator=torch.Generator().manual_seed(7))
    a2 = net.forward_mean_field(x0).preactivations[1]
    u = torch.rand(a2.shape, generator=torch.Generator().manual_seed(7), dtype=a2.dtype)
    bits = (u < torch.sigmoid(2 * a2)).double()
    logits = net.reverse_mean_field(2 * bits - 1, layer=2).logits
    expected = F.binary_cross_entropy_with_logits(logits, x0, reduction="none").sum(1).mean()
    assert torch.isclose(parts.reverse_nll_sum, expected)


def test_code_term_trains_the_class_to_code_link():
    torch.manual_seed(4)
    net = DCIM.from_spec([6, 5, 3], input_shape=(8,)).double()
    x0, y = _batch((8,), n=10, classes=3)
    x0 = x0.double()
    b2 = "layers.1.bias"  # b^{n-1}: untouched by (22)'s reverse term, trained by the code term
    net.zero_grad()
    sampled_layer_loss(net, x0, y, generator=torch.Generator().manual_seed(0)).total.backward()
    without = net.layers[1].bias.grad.clone()
    net.zero_grad()
    parts = sampled_layer_loss(net, x0, y, code_weight=1.0, generator=torch.Generator().manual_seed(0))
    parts.total.backward()
    assert not torch.allclose(net.layers[1].bias.grad, without), b2
    # the reported code NLL is -log p(x̃^2 | y) with x̃^2 drawn exactly as the loss draws it
    a2 = net.forward_mean_field(x0).preactivations[1]
    u = torch.rand(a2.shape, generator=torch.Generator().manual_seed(0), dtype=a2.dtype)
    bits = (u < torch.sigmoid(a2)).double()
    code_logits = net.class_reverse_mean_field().preactivations[0][y]
    expected = F.binary_cross_entropy_with_logits(code_logits, bits, reduction="sum") / 10
    assert torch.isclose(parts.code_nll, expected)
    with pytest.raises(ValueError, match="code_weight"):
        sampled_layer_loss(net, x0, y, layer=1, code_weight=1.0)


def test_an_objective_takes_exactly_its_own_settings():
    from pyro_dcim.objectives import OBJECTIVES, objective_settings

    net = DCIM.from_spec([6, 4], input_shape=(8,))
    x0, y = torch.rand(3, 8), torch.tensor([0, 1, 2])
    with pytest.raises(TypeError):
        bidirectional_loss(net, x0, y, particles=5)   # an rws setting
    pool = dict(reverse_weight=2.0, reduction="sum", layer=None, code_weight=0.0, generator=None,
                report_reverse=False, approximation="first-order", particles=2, wake_phi_weight=None,
                sleep_weight=None)
    assert set(objective_settings(OBJECTIVES["discriminative"], pool)) == {"report_reverse", "approximation"}
    assert "particles" in objective_settings(OBJECTIVES["rws"], pool)
    for objective in OBJECTIVES.values():
        objective(net, x0, y, **objective_settings(objective, pool))
