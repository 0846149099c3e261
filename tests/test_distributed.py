"""DistributedDataParallel on CPU (gloo, 2 processes) equals one process on the combined batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pyro_dcim import DCIM
from pyro_dcim.distributed import Context, ObjectiveModule, cleanup, setup, wrap
from pyro_dcim.objectives import get_objective

SPEC, SHAPE, STEPS, BATCH = [(3, 2, 4), 12, 4], (1, 8, 8), 4, 16


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(STEPS * BATCH, *SHAPE, generator=g), torch.randint(0, 4, (STEPS * BATCH,), generator=g)


def _train(ctx: Context, objective: str) -> dict:
    torch.manual_seed(0)
    net = DCIM.from_spec(SPEC, SHAPE)
    model = wrap(ObjectiveModule(net, get_objective(objective)), ctx)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = _data()
    for step in range(STEPS):
        idx = ctx.shard(torch.arange(step * BATCH, (step + 1) * BATCH))
        opt.zero_grad()
        model(x[idx], y[idx]).total.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _worker(rank: int, port: int, objective: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = setup("cpu")
    state = _train(ctx, objective)
    if ctx.is_main:
        torch.save(state, out)
    cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("objective", ["bidirectional", "discriminative"])
def test_two_gloo_processes_equal_one_process_on_the_combined_batch(tmp_path, objective):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(_free_port(), objective, out), nprocs=2, join=True)
    ddp = torch.load(out)
    single = _train(Context(), objective)
    for name, value in single.items():
        assert torch.allclose(ddp[name], value, atol=1e-6), name
    # and the run really moved the parameters
    torch.manual_seed(0)
    init = DCIM.from_spec(SPEC, SHAPE).state_dict()
    assert not torch.allclose(init["layers.0.conv.weight"], single["layers.0.conv.weight"])


def test_shard_cuts_equal_slices():
    idx = torch.arange(10)
    parts = [Context(rank=r, world_size=3).shard(idx) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert torch.equal(Context().shard(idx), idx)
