"""The CUDA path: the same numbers on the GPU as on the CPU (skipped without a GPU)."""

import pytest
import torch
from pyro import poutine

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.objectives import get_objective

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("arch, shape", [("dense", (784,)), ("cnn", (1, 28, 28))])
def test_mean_field_and_objectives_match_cpu(arch, shape):
    torch.manual_seed(0)
    cpu = DCIM.from_spec(PAPER_SPECS[arch], shape).double()
    gpu = DCIM.from_spec(PAPER_SPECS[arch], shape).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x0 = torch.rand(16, *shape, dtype=torch.float64)
    y = torch.arange(16) % 10
    a, b = cpu.forward_mean_field(x0), gpu.forward_mean_field(x0.cuda())
    assert torch.allclose(a.logits, b.logits.cpu(), atol=1e-8)
    assert torch.allclose(cpu.reverse_mean_field(y).logits, gpu.reverse_mean_field(y.cuda()).logits.cpu(), atol=1e-8)
    for name in ("discriminative", "bidirectional"):
        pa, pb = get_objective(name)(cpu, x0, y), get_objective(name)(gpu, x0.cuda(), y.cuda())
        assert torch.allclose(pa.total, pb.total.cpu(), atol=1e-8)
        pb.total.backward()
    parts = get_objective("sampled-layer")(gpu, x0.cuda(), y.cuda())
    parts.total.backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in gpu.parameters())


def test_pyro_traces_on_cuda():
    net = DCIM.from_spec([(3, 2, 4), 8, 3], (1, 9, 9)).cuda()
    x0 = torch.rand(5, 1, 9, 9, device="cuda")
    tr = poutine.trace(net.forward_model).get_trace(x0)
    assert tr.nodes["x1"]["value"].is_cuda and tr.nodes["class"]["value"].shape == (5,)
    tr = poutine.trace(net.reverse_model).get_trace(torch.tensor([0, 1, 2], device="cuda"))
    assert tr.nodes["x0"]["value"].shape == (3, 1, 9, 9)
