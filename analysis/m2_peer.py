"""The semi-supervised peer: Kingma et al. (2014)'s M2 in Pyro, on the labels, data and clock of a DCIM run.

    python analysis/m2_peer.py RUN_DIR [--seconds S] [--out DIR]

``RUN_DIR`` is a ``fit --labels N`` run (``analysis/label_runs.py``): M2 trains on the same training split, the
same N labelled digits (``select_labels`` with the run's seed), batches built the same way (``epoch_order``: the
run's labelled share of every batch), a fresh Bernoulli draw of every image per step (dynamic binarisation),
Adam at the run's learning rate, for as many seconds of training as the run took (``--seconds`` to set
another budget).  The model, written from the paper (its section 3.1.2 and appendix C):

    p(y) = Cat(1/C),  p(z) = N(0, I_50),  p(x | y, z) = Bernoulli(MLP_500([z, y]))
    q(y | x) = Cat(MLP_500(x)),  q(z | x, y) = N(MLP_500([x, y]))

trained by ``TraceEnum_ELBO``: a labelled row observes ``y``; an unlabelled row's ``y`` is enumerated exactly (the
paper's ``U(x)``, whose ``q(y | x)`` term is what teaches the classifier from unlabelled digits), plus the
classification term ``α · (−log q(y | x))`` on labelled rows, ``α = 0.1 N / N_l`` per labelled row (the paper's
``α = 0.1 N`` with its sum over the data).  Writes ``m2-RUN.json`` with the test accuracy of ``q(y | x)`` on the
10,000 test intensities (as ``fit`` reports it for the DCIM), the steps and seconds taken.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _report
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam
from torch import nn

from pyro_dcim.training.batches import epoch_order, load_splits
from pyro_dcim.training.config import TrainConfig
from pyro_dcim.training.runs import read_config

Z_DIM, HIDDEN = 50, 500


def mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, n_out))


class M2(nn.Module):
    """Kingma et al. (2014)'s M2: ``model`` and ``guide`` over a batch ``x (B, 784)`` with labels ``y (B,)``, ``-1``
    where unlabelled."""

    def __init__(self, pixels: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.classes = classes
        self.decoder = mlp(Z_DIM + classes, pixels)
        self.encoder_y = mlp(pixels, classes)
        self.encoder_z = mlp(pixels + classes, 2 * Z_DIM)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.module("m2", self)
        labelled = y >= 0
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            label = pyro.sample("y", dist.OneHotCategorical(x.new_full((self.classes,), 1.0 / self.classes)),
                                obs=F.one_hot(y.clamp(min=0), self.classes).to(x) if labelled.all() else None)
            logits = self.decoder(torch.cat([z, label], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def classify(self, x: torch.Tensor, y: torch.Tensor, alpha: float) -> None:
        """The paper's extra term ``α · (−log q(y | x))`` on labelled rows, as a model with an empty guide."""
        pyro.module("m2", self)
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=alpha):
            pyro.sample("y_classified", dist.Categorical(logits=self.encoder_y(x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.module("m2", self)
        labelled = y >= 0
        with pyro.plate("data", len(x)):
            if labelled.all():
                label = F.one_hot(y, self.classes).to(x)
            else:
                label = pyro.sample("y", dist.OneHotCategorical(logits=self.encoder_y(x)))
            stats = self.encoder_z(torch.cat([x.expand(*label.shape[:-1], -1), label], -1))
            pyro.sample("z", dist.Normal(stats[..., :Z_DIM], F.softplus(stats[..., Z_DIM:]) + 1e-4).to_event(1))


def train_m2(cfg: TrainConfig, seconds: float, alpha: float | None = None, log=print,
             max_steps: int | None = None) -> dict:
    """Train M2 on ``cfg``'s data and labels for ``seconds`` of wall-clock (or ``max_steps`` steps, whichever
    comes first); the record of what it reached."""
    torch.manual_seed(cfg.seed)
    pyro.clear_param_store()
    data = load_splits(cfg, torch.device("cpu"))
    x_train = data.train_x.flatten(1)
    n, n_labelled = len(x_train), int(data.labelled.sum())
    alpha = 0.1 * n / n_labelled if alpha is None else alpha
    m2 = M2(x_train.shape[1], int(data.train_y.max()) + 1)
    optim = Adam({"lr": cfg.lr})   # one Adam state per parameter, shared by the three terms (as Pyro's SS-VAE)
    svi_u = SVI(m2.model, config_enumerate(m2.guide, "parallel", expand=True), optim,
                TraceEnum_ELBO(max_plate_nesting=1))
    svi_l = SVI(m2.model, m2.guide, optim, Trace_ELBO())
    svi_c = SVI(m2.classify, lambda *args: None, optim, Trace_ELBO())
    g = torch.Generator().manual_seed(cfg.seed)
    steps, epoch, t0 = 0, 0, time.perf_counter()
    def done() -> bool:
        return time.perf_counter() - t0 >= seconds or (max_steps is not None and steps >= max_steps)

    while not done():
        order = epoch_order(n, cfg.seed, epoch, data.labelled, cfg.labelled_share, cfg.batch_size)
        for idx in order.split(cfg.batch_size):
            x = torch.bernoulli(x_train[idx], generator=g)
            lab = data.labelled[idx]
            y = data.train_y[idx]
            # every term is a sum over its rows: each row's ELBO has weight 1, each labelled row's class term α
            if (~lab).any():
                svi_u.step(x[~lab], torch.full_like(y[~lab], -1))
            if lab.any():
                svi_l.step(x[lab], y[lab])
                svi_c.step(x[lab], y[lab], alpha)
            steps += 1
            if done():
                break
        epoch += 1
        log(f"M2 epoch {epoch}: {steps} steps, {time.perf_counter() - t0:.0f} s")
    with torch.no_grad():
        pred = m2.encoder_y(data.test_x.flatten(1)).argmax(-1)
    return {"test_acc": float((pred == data.test_y).double().mean()), "steps": steps, "epochs_started": epoch,
            "seconds": time.perf_counter() - t0, "alpha": alpha, "labels": n_labelled, "seed": cfg.seed,
            "train_images": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a fit --labels N run folder")
    p.add_argument("--seconds", type=float, help="training budget (default: the run's training seconds)")
    p.add_argument("--alpha", type=float, help="classification weight per labelled row (default 0.1 N / N_l)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_dict(read_config(args.run))
    if not cfg.labels:
        raise SystemExit(f"{args.run} is not a fit --labels N run (N >= 1)")
    seconds = args.seconds or json.loads((args.run / "summary.json").read_text())["seconds"]
    print(f"M2 on {args.run}'s {cfg.labels} labels for {seconds:.0f} s of training", flush=True)
    record = {"run": str(args.run), **train_m2(cfg, seconds, args.alpha, log=lambda m: print(m, flush=True))}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"m2-{args.run.name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"M2 test accuracy {record['test_acc']:.4f} after {record['steps']} steps; saved {path}")


if __name__ == "__main__":
    main()
