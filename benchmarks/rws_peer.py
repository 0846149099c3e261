"""Our reweighted wake-sleep step against Pyro's own ``pyro.infer.ReweightedWakeSleep`` on the same DCIM.

    python benchmarks/rws_peer.py [--data-dir ../shared/data/mnist] [--rounds 5] [--out DIR]

Dense 784-512-512-10, untied, K = 5 particles, Adam, one thread, binarised MNIST digits in one fixed order.
Both sides optimise the same objective with the same settings (``rws --untie``: wake-φ weight 1, nats per
image, the forward class term beside it); ``generative``'s wake-φ 0.01 is timed too (the same work):

* ours: :func:`pyro_dcim.objectives.reweighted_wake_sleep_loss`, weights per image, ``torch.optim.Adam``;
* Pyro: ``SVI(model, guide, pyro.optim.Adam, ReweightedWakeSleep(num_particles=K))``, its documented usage,
  with the model = the reverse chain ``net.reverse_model(y, x0)`` (``p(h | y) p(x0 | h)``, the class given,
  ``x0`` observed) plus a ``pyro.factor`` holding the forward class term, and the guide = the forward chain
  ``q(h | x0)`` drawn ancestrally (:func:`forward_chain_guide`).  Pyro's RWS sums every image of a batch
  into one weight per particle ("mini-batch training is not supported yet"), so at batch 128 its update
  is not RWS per image; at batch 1 both compute the same thing (``tests/test_rws_peer.py``).

Prints seconds per step and per epoch of 50,000 digits, and the ratio Pyro/ours, at batch 128 and 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable, Optional

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, ReweightedWakeSleep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import machine_info, time_cases  # noqa: E402

from pyro_dcim import DCIM, PAPER_SPECS  # noqa: E402
from pyro_dcim.data import load_dataset  # noqa: E402
from pyro_dcim.init import data_dependent_init, init_input_bias  # noqa: E402
from pyro_dcim.objectives import reweighted_wake_sleep_loss  # noqa: E402
from pyro_dcim.pyro_models import PLATE_NAME, _bernoulli, hidden_site  # noqa: E402

TRAIN_SIZE = 50_000   # fit's training split of full MNIST (the last 10,000 are validation)
Step = Callable[[torch.Tensor, torch.Tensor], object]


# -- the Pyro side --------------------------------------------------------------------------------
def forward_chain_guide(net: DCIM, name: str = "dcim") -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``q(x^1 … x^{n-1} | x^0)``, the forward chain (eq. 13) drawn ancestrally, as a guide for
    ``net.reverse_model(y, x0)``: the same sites ``x1 … x{n-1}`` in the same ``"data"`` plate.
    (``mean_field_guide`` is factorised; ``forward_model`` observes the class, a site the reverse model lacks.)"""
    def guide(y: torch.Tensor, x0: torch.Tensor) -> None:
        pyro.module(name, net)
        with pyro.plate(PLATE_NAME, x0.shape[0], dim=-1):
            h = net.units.state(x0)
            for k in range(1, net.num_layers):
                # the model's own Bernoulli layer site: the same sampler and log-prob as the reverse model's
                bits = pyro.sample(hidden_site(k), _bernoulli(net.conditional_logits(k, h), len(net.shapes[k])))
                h = net.units.state(bits)
    return guide


def reverse_chain_model(net: DCIM, name: str = "dcim", class_term: bool = True
                        ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``p(x^0, h | y)``, the reverse chain, observing ``x0``; with ``class_term`` also a factor
    ``log p(y | x^0)`` of the forward mean field (eq. 15), summed over the batch.  The factor is the same for
    every particle, so it leaves the weights alone and adds exactly the class term's gradient to wake-θ:
    Pyro's update is then our objective's (``tests/test_rws_peer.py``)."""
    def model(y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if class_term:
            pyro.factor("class", -F.cross_entropy(net(x0), y, reduction="sum"))
        return net.reverse_model(y, x0, name=name)
    return model


def pyro_rws(particles: int, vectorize: bool = True) -> ReweightedWakeSleep:
    """Pyro's RWS, wake-φ only (``insomnia=1``); one plate (``"data"``), so no guessing run is needed."""
    return ReweightedWakeSleep(num_particles=particles, insomnia=1.0, vectorize_particles=vectorize,
                               max_plate_nesting=1)


def pyro_step(net: DCIM, particles: int, lr: float, vectorize: bool = True, name: str = "dcim") -> Step:
    """One ``svi.step(y, x0)`` of Pyro's RWS on ``net`` (its parameters registered under ``name``: give each
    net its own, since the param store keeps the first tensor registered under a name)."""
    svi = SVI(reverse_chain_model(net, name), forward_chain_guide(net, name), pyro.optim.Adam({"lr": lr}),
              pyro_rws(particles, vectorize))
    return lambda x0, y: svi.step(y, x0)


# -- our side -------------------------------------------------------------------------------------
def ours_step(net: DCIM, particles: int, lr: float, wake_phi_weight: float = 1.0,
              generator: Optional[torch.Generator] = None) -> Step:
    """One Adam step on :func:`reweighted_wake_sleep_loss` (nats per image, reverse weight 1, no sleep)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(x0: torch.Tensor, y: torch.Tensor) -> object:
        opt.zero_grad(set_to_none=True)
        parts = reweighted_wake_sleep_loss(net, x0, y, particles=particles, wake_phi_weight=wake_phi_weight,
                                           reduction="sum", generator=generator)
        parts.total.backward()
        opt.step()
        return parts
    return step


# -- shared setup ---------------------------------------------------------------------------------
def training_digits(data_dir: str, size: int = TRAIN_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` training digits of MNIST, ``(size, 1, 28, 28)``, one fixed Bernoulli draw per pixel."""
    x, y = load_dataset("mnist", "train", data_dir, binarize_mode="sample")
    return x[:size], y[:size]


def build_net(x: torch.Tensor, seed: int = 0) -> DCIM:
    """The dense net as ``fit --untie`` starts it: seeded weights, data-dependent init on 1024 digits,
    ``b^0`` the mean image's logit, both weight copies equal."""
    torch.manual_seed(seed)
    net = DCIM.from_spec(PAPER_SPECS["dense"], input_shape=tuple(x.shape[1:])).untie()   # (1, 28, 28) as fit
    data_dependent_init(net, x[:1024])
    init_input_bias(net, x)
    net.sync_reverse_weights()
    return net


def batches(n: int, batch: int, seed: int):
    """Index batches of an endless run of epochs, each a fresh permutation from one seeded generator:
    both sides see the same digits in the same order."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch + 1, batch):
            yield perm[i:i + batch]


def _cases(x: torch.Tensor, y: torch.Tensor, batch: int, particles: int) -> dict[str, Callable[[], object]]:
    cases = {}

    def on_data(step: Step, seed: int = 0) -> Callable[[], object]:
        order = batches(len(x), batch, seed)

        def run() -> object:
            idx = next(order)
            return step(x[idx], y[idx])
        return run

    # a tiny learning rate: the nets stay near their start, so every case times the same regime
    cases["ours (wake-phi 1)"] = on_data(ours_step(build_net(x), particles, 1e-6))
    cases["ours generative (wake-phi 0.01)"] = on_data(ours_step(build_net(x), particles, 1e-6, 0.01))
    cases["Pyro RWS, vectorised"] = on_data(pyro_step(build_net(x), particles, 1e-6, True, f"vec{batch}"))
    cases["Pyro RWS, sequential particles"] = on_data(pyro_step(build_net(x), particles, 1e-6, False,
                                                                f"seq{batch}"))
    novalid = on_data(pyro_step(build_net(x), particles, 1e-6, True, f"noval{batch}"))

    def without_validation() -> object:
        with pyro.validation_enabled(False):
            return novalid()
    cases["Pyro RWS, vectorised, validation off"] = without_validation
    return cases


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--particles", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="folder for rws_peer.json (default: print only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # steps per round so that a round of one case is about 1 s at batch 128 and 0.5 s at batch 1 (unloaded)
    steps = {b: max(3, round(40 / b ** 0.5)) if b > 1 else 25 for b in args.batches}
    guess = sum(5 * (args.rounds * steps[b] + 3) * (0.2 if b > 1 else 0.025) for b in args.batches)
    print(f"expected time: about {guess / 60:.1f} min unloaded (more on a busy machine)", flush=True)
    pyro.clear_param_store()
    x, y = training_digits(args.data_dir)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for b in args.batches:
        times = time_cases(_cases(x, y, b, args.particles), torch.device("cpu"), rounds=args.rounds,
                           steps=steps[b], warmup=3)
        per_epoch = math.floor(TRAIN_SIZE / b)
        results[str(b)] = {name: {"seconds_per_step": t, "seconds_per_epoch": t * per_epoch}
                           for name, t in times.items()}
    print(f"dense 784-512-512-10 untied, K={args.particles}, {args.threads} thread(s), median of {args.rounds} "
          f"interleaved rounds; epoch = {TRAIN_SIZE} digits; ratio = this case's time / ours (wake-phi 1)")
    print(f"{'batch':>5}  {'case':<38} {'ms/step':>9} {'s/epoch':>9} {'ratio':>6}")
    for b, rows in results.items():
        base = rows["ours (wake-phi 1)"]["seconds_per_step"]
        for name, r in rows.items():
            r["ratio_to_ours"] = r["seconds_per_step"] / base
            print(f"{b:>5}  {name:<38} {1e3 * r['seconds_per_step']:9.2f} {r['seconds_per_epoch']:9.1f} "
                  f"{r['ratio_to_ours']:6.2f}")
    if "128" in results and "1" in results:
        # Pyro's RWS weights each image by itself only at batch 1: its correct epoch against ours at 128
        cross = results["1"]["Pyro RWS, vectorised"]["seconds_per_epoch"] / \
            results["128"]["ours (wake-phi 1)"]["seconds_per_epoch"]
        print(f"Pyro per-image-correct (batch 1) epoch / ours at batch 128: {cross:.1f}x")
        results["pyro_batch1_epoch_over_ours_batch128_epoch"] = cross  # type: ignore[assignment]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"command": "python " + " ".join(sys.argv), "particles": args.particles,
                  "train_size": TRAIN_SIZE, "machine": machine_info(torch.device("cpu")), "results": results}
        (args.out / "rws_peer.json").write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out / 'rws_peer.json'}")


if __name__ == "__main__":
    main()
