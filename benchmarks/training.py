"""Training-step time: a plain ``nn.Sequential`` with cross-entropy (the reference) against
the DCIM's discriminative, bidirectional (21) and sampled-layer (22) objectives."""

from __future__ import annotations

import pyro
import torch
import torch.nn.functional as F
from timing import time_cases
from torch import nn

from pyro_dcim import DCIM, PAPER_SPECS
from pyro_dcim.objectives import get_objective, objective_settings
from pyro_dcim.spec import ConvSpec, parse_spec
from pyro_dcim.training.distributed import ObjectiveModule

INPUT_SHAPES = {"dense": (784,), "cnn": (1, 28, 28)}


def plain_sequential(arch: str) -> nn.Sequential:
    """The same architecture as an ordinary sigmoid network."""
    net = DCIM.from_spec(PAPER_SPECS[arch], INPUT_SHAPES[arch])
    mods: list[nn.Module] = []
    for k, (layer, spec) in enumerate(zip(net.layers, parse_spec(PAPER_SPECS[arch]))):
        if isinstance(spec, ConvSpec):
            mods.append(nn.Conv2d(layer.in_shape[0], spec.kernels, spec.window, spec.stride, spec.padding))
        else:
            if len(layer.in_shape) > 1:
                mods.append(nn.Flatten())
            mods.append(nn.Linear(layer.weight.shape[1], spec.units))
        if k < net.num_layers - 1:
            mods.append(nn.Sigmoid())
    return nn.Sequential(*mods)


def bench_training(arch: str, batch: int, device: torch.device, rounds: int, steps: int,
                   variants: bool = False) -> dict[str, float]:
    """Seconds per Adam step for each case, batch of random images in [0, 1].  ``variants`` adds the
    bidirectional step under bf16 autocast and under ``torch.compile`` (the ``--amp`` and
    ``--compile`` options of the training loop)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *INPUT_SHAPES[arch], generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    plain = plain_sequential(arch).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-4)

    def plain_step():
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x), y).backward()
        plain_opt.step()

    cases = {"plain": plain_step}
    for name in ("discriminative", "bidirectional", "sampled-layer"):
        net = DCIM.from_spec(PAPER_SPECS[arch], INPUT_SHAPES[arch]).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        objective = get_objective(name)

        # as the training loop calls it: the discriminative reverse loss is measured at evaluation
        settings = objective_settings(objective, {"report_reverse": False})

        def step(net=net, opt=opt, objective=objective, settings=settings):
            opt.zero_grad(set_to_none=True)
            objective(net, x, y, **settings).total.backward()
            opt.step()

        cases[name] = step
    for tag in (("bf16", "compile") if variants else ()):
        net = DCIM.from_spec(PAPER_SPECS[arch], INPUT_SHAPES[arch]).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        module = ObjectiveModule(net, get_objective("bidirectional"))
        loss = torch.compile(module) if tag == "compile" else module

        def step(opt=opt, loss=loss, amp=tag == "bf16"):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                parts = loss(x, y)
            parts.total.backward()
            opt.step()

        cases[f"bidirectional+{tag}"] = step
    with pyro.validation_enabled(False):  # as the training loop runs its hot path
        return time_cases(cases, device, rounds=rounds, steps=steps)
