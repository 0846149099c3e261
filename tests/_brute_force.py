"""Brute-force references for the inference tests: sum the Pyro models over every joint hidden state.

Independent of :mod:`pyro_dcim.inference`: the joint states of all hidden layers are
enumerated at once (so only tiny nets), each conditioned into the Pyro model under a
plate, and the model's own log-probabilities are summed.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from pyro_dcim import DCIM
from pyro_dcim.pyro_models import hidden_site


@pytest.fixture(autouse=False)
def single_thread():
    """Tiny tensors run far faster on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_net(spec, input_shape, units="01", seed=0, scale=1.0) -> DCIM:
    torch.manual_seed(seed)
    net = DCIM.from_spec(spec, input_shape=input_shape, units=units).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, scale)
    return net


def random_batch(net: DCIM, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.bernoulli(torch.full((batch, *net.input_shape), 0.5, dtype=torch.float64), generator=g)
    y = torch.randint(net.num_classes, (batch,), generator=g)
    return x0, y


def joint_states(net: DCIM) -> dict[int, torch.Tensor]:
    """Every joint hidden configuration: ``{k: bits (J, *shape_k)}`` with ``J = 2^{Σ m_k}``."""
    sizes = [int(torch.Size(net.shapes[k]).numel()) for k in range(1, net.num_layers)]
    total = sum(sizes)
    codes = torch.arange(1 << total)
    bits = ((codes[:, None] >> torch.arange(total)) & 1).double()
    out, start = {}, 0
    for k, m in enumerate(sizes, start=1):
        out[k] = bits[:, start:start + m].reshape(-1, *net.shapes[k])
        start += m
    return out


def brute_force(net: DCIM, x0, y, direction: str = "forward", posterior: bool = False) -> dict:
    """Exact marginals (``posterior=False``) or posterior given both ends, by summing the joint.

    Returns ``hidden`` (index order), ``classes``/``image`` (marginals only), ``log_joint``
    ``(J, B)`` over :func:`joint_states`, ``log_evidence`` ``(B,)`` and ``states``.
    """
    states = joint_states(net)
    cond = {hidden_site(k): v.unsqueeze(1) for k, v in states.items()}   # broadcast over the data plate
    if direction == "forward":
        fn, args, end_site = net.forward_model, (x0, y if posterior else None), "class"
    else:
        fn, args, end_site = net.reverse_model, (y, x0 if posterior else None), "x0"
    with torch.no_grad(), pyro.plate("joint", len(states[1]), dim=-2):
        tr = poutine.trace(poutine.condition(fn, data=cond)).get_trace(*args)
    tr.compute_log_prob()
    log_joint = sum(tr.nodes[hidden_site(k)]["log_prob"] for k in states)
    if posterior:
        log_joint = log_joint + tr.nodes[end_site]["log_prob"]
    w = torch.softmax(log_joint, 0)
    out = {"log_joint": log_joint, "log_evidence": torch.logsumexp(log_joint, 0), "states": states, "weights": w}
    out["hidden"] = [torch.einsum("jb,j...->b...", w, v) for v in states.values()]
    if not posterior:
        fn_end = tr.nodes[end_site]["fn"]
        probs = fn_end.probs if direction == "forward" else fn_end.base_dist.probs
        probs = probs.expand(*w.shape, *probs.shape[2:])
        out["classes" if direction == "forward" else "image"] = torch.einsum("jb,jb...->b...", w, probs)
    return out


def state_index(net: DCIM, bits: dict[int, torch.Tensor]) -> torch.Tensor:
    """Index into :func:`joint_states` of joint configurations ``{k: (..., *shape_k)}``."""
    flat = torch.cat([bits[k].flatten(-len(net.shapes[k])) for k in sorted(bits)], -1)
    return (flat.long() << torch.arange(flat.shape[-1])).sum(-1)
