"""Train the independent judge of generated digits: a plain CNN on MNIST (:mod:`pyro_dcim.classifier`).

    python analysis/mnist_classifier.py [--epochs 3] [--out out/analysis/mnist_cnn.pt]

Trains on all 60,000 training digits, half of each epoch's batches binarised by one Bernoulli
draw per pixel (ancestral samples are binary), and prints the test accuracy on the intensities
and on binarised test digits; the goal is >= 0.99.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _report
import torch
import torch.nn.functional as F

from pyro_dcim.classifier import PlainCNN, save_classifier
from pyro_dcim.data import binarize, load_dataset


@torch.no_grad()
def accuracy(net: PlainCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i:i + 1000]).argmax(-1) for i in range(0, len(x), 1000)])
    net.train()
    return float((pred == y).double().mean())


def train_classifier(data_dir: str, epochs: int = 3, seed: int = 0, log=print) -> tuple[PlainCNN, float]:
    torch.manual_seed(seed)
    x, y = load_dataset("mnist", "train", data_dir)
    tx, ty = load_dataset("mnist", "test", data_dir)
    net = PlainCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for i, idx in enumerate(torch.randperm(len(x), generator=g).split(128)):
            xb = x[idx]
            if i % 2:
                xb = torch.bernoulli(xb, generator=g)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy(net, tx, ty):.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    acc = accuracy(net, tx, ty)
    log(f"test accuracy {acc:.4f} on intensities, {accuracy(net, binarize(tx, 'sample', seed), ty):.4f} binarised")
    return net.eval(), acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=_report.DEFAULT_OUT / "mnist_cnn.pt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net, acc = train_classifier(args.data_dir, args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(net, args.out, acc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
