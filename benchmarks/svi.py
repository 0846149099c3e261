"""What a user would otherwise do in Pyro: fit the same sigmoid belief net classifier with
``pyro.infer.SVI`` (``TraceGraph_ELBO``, score-function gradients for the Bernoulli layers,
the mean-field guide), against our mean-field objective, for equal wall time."""

from __future__ import annotations

import time

import pyro
import torch
from pyro.infer import SVI, TraceGraph_ELBO
from timing import sync

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.data import load_dataset
from pyro_dcim.objectives import discriminative_loss


def _accuracy(net: DCIM, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def bench_svi(device: torch.device, seconds: float, batch: int = 128, lr: float = 1e-3) -> dict[str, dict]:
    x, y = load_dataset("mnist-subset", "train")
    xv, yv = load_dataset("mnist-subset", "test")
    x, y, xv, yv = x.flatten(1).to(device), y.to(device), xv.flatten(1).to(device), yv.to(device)
    steps_per_epoch = len(x) // batch
    results = {}
    for method in ("mean-field objective", "SVI TraceGraph_ELBO"):
        pyro.clear_param_store()
        torch.manual_seed(0)
        net = DCIM.from_spec(PAPER_SPECS["dense"], (784,)).to(device)
        if method == "mean-field objective":
            opt = torch.optim.Adam(net.parameters(), lr=lr)

            def step(xb, yb, net=net, opt=opt):
                opt.zero_grad(set_to_none=True)
                discriminative_loss(net, xb, yb, report_reverse=False).total.backward()
                opt.step()
        else:
            svi = SVI(net.forward_model, net.mean_field_guide, pyro.optim.Adam({"lr": lr}), TraceGraph_ELBO())

            def step(xb, yb, svi=svi):
                svi.step(xb, yb)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            perm = torch.randperm(len(x), device=device)
            for i in range(steps_per_epoch):
                idx = perm[i * batch:(i + 1) * batch]
                step(x[idx], y[idx])
                steps += 1
                if time.perf_counter() - start >= seconds:
                    break
        sync(device)
        elapsed = time.perf_counter() - start
        results[method] = {"seconds": elapsed, "steps": steps, "epochs": steps / steps_per_epoch,
                           "seconds_per_epoch": elapsed / steps * steps_per_epoch,
                           "val_acc": _accuracy(net, xv, yv)}
    return results
