"""What "0.14 validation loss" of the paper's (22) can mean (issue 24 §2): a (22) net's reverse loss per pixel
under every reading of the paper's sentence that its text allows, on the run's own validation digits.

The reverse term of (22) is the binary cross-entropy of the image under the reverse mean field from a code
``x̃^k ~ p(x^k | x^0)`` (``objectives.sampled_layer_loss``).  The paper's formula was lost in extraction, so
these are measured side by side, for each run given:

- the **code**: one Bernoulli draw (what the objective trains and ``fit`` reports; the mean over ``--draws``
  draws), the forward **mean field** ``μ^k`` itself (no sampling), or the **most likely** bits ``μ^k > 1/2``;
- the **targets**: the grey intensities, and the same digits thresholded at 1/2 (the net is given the digits as it
  was trained on them: grey for ``--binarize none`` and ``dynamic``, thresholded for ``threshold``);
- the **floor** of each target convention: its per-pixel entropy, which no reconstruction can beat (0 for
  binary targets; grey MNIST has 0.0586 nats per pixel), and the (21) floor of the class means;
- the code's own noise: ``H(x^k | x^0)`` in bits per digit, summed over its units;
- the split: validation (the last 10,000 training digits, as ``fit``), and the first 10,000 training digits.

    python analysis/sampled_layer_loss.py runs/paper/cnn-sampled-layer-e15-... [RUN ...] --out out/sampled-layer-loss

Writes ``sampled_layer_loss.md`` and ``.json`` into ``--out`` (default ``out/sampled-layer-loss``, untracked).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import _report
import torch
import torch.nn.functional as F

from pyro_dcim.data import binarize, load_dataset
from pyro_dcim.objectives import sampled_layer
from pyro_dcim.training.runs import read_config

CODES = ("sampled", "mean field", "most likely")


def entropy_per_pixel(t: torch.Tensor) -> float:
    """Mean binary entropy of targets ``t`` in [0, 1], nats per pixel: the least any model can score."""
    t = t.double()
    return float(-(torch.special.xlogy(t, t) + torch.special.xlogy(1 - t, 1 - t)).mean()) + 0.0  # never -0.0


def class_mean_floor(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """BCE per pixel of each digit under its class's mean training image: the best (21) can reach."""
    flat = train_x.reshape(len(train_x), -1).double()
    means = torch.stack([flat[train_y == c].mean(0) for c in range(int(train_y.max()) + 1)]).clamp(1e-6, 1 - 1e-6)
    return float(F.binary_cross_entropy(means[y], x.reshape(len(x), -1).double()))


@torch.no_grad()
def reverse_losses(net, x: torch.Tensor, layer: int | None, targets: dict[str, torch.Tensor], draws: int,
                   seed: int, batch: int = 500) -> tuple[dict[str, dict[str, float]], float]:
    """BCE per pixel of ``targets`` under the reverse pass from each kind of code of layer ``k`` (given ``x``),
    and the code's entropy ``H(x^k | x^0)`` in bits per digit (how much the sampled code is noise)."""
    k = sampled_layer(net, layer)
    gen = torch.Generator().manual_seed(seed)
    sums = {code: {name: 0.0 for name in targets} for code in CODES}
    code_bits = 0.0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        a = net.forward_mean_field(xb, upto=k).preactivations[k - 1]
        probs = torch.sigmoid(net.units.bit_logits(a))
        code_bits += entropy_per_pixel(probs) * probs[0].numel() * len(probs) / math.log(2)
        codes = {"mean field": [net.units.mean(a)], "most likely": [net.units.state((probs > 0.5).to(probs.dtype))],
                 "sampled": [net.units.state(torch.rand(probs.shape, generator=gen).lt_(probs).to(probs.dtype))
                             for _ in range(draws)]}
        for code, states in codes.items():
            for state in states:
                logits = net.reverse_mean_field(state, layer=k).logits
                for name, t in targets.items():
                    bce = F.binary_cross_entropy_with_logits(logits, t[i:i + batch], reduction="sum")
                    sums[code][name] += float(bce) / len(states)
    pixels = x[0].numel() * len(x)
    loss = {code: {name: s / pixels for name, s in by.items()} for code, by in sums.items()}
    return loss, code_bits / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of (22) (sampled-layer) nets")
    p.add_argument("--images", type=int, default=10000, help="digits per split (default 10000)")
    p.add_argument("--draws", type=int, default=4, help="code draws per digit for the sampled code (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/sampled-layer-loss"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(args.runs)} run(s) x 2 splits x {args.images} digits x {args.draws + 2} codes; "
          "expect 1-3 minutes per run for the paper's CNN on one CPU core")
    records, rows = [], []
    for path in args.runs:
        run, cfg = _report.load_run(path), read_config(Path(path) / "config.json")
        if cfg.get("objective") != "sampled-layer":
            raise SystemExit(f"{path}: objective {cfg.get('objective')!r}, not sampled-layer (22)")
        x, y = load_dataset(cfg.get("dataset", "mnist"), "train", cfg.get("data_dir"))
        x = x.to(run.net.input_bias.dtype)
        seen = cfg.get("binarize", "none")   # dynamic: a fresh draw each step, whose expectation is the grey image
        seen = seen if seen in ("none", "threshold") else "none"
        start = time.perf_counter()
        for split, sl in (("validation", slice(len(x) - args.images, None)), ("training", slice(0, args.images))):
            xs, ys = x[sl], y[sl]
            targets = {"grey": xs, "thresholded": binarize(xs, "threshold")}
            loss, code_bits = reverse_losses(run.net, binarize(xs, seen), cfg.get("sample_layer"), targets,
                                             args.draws, args.seed)
            train_x, train_y = x[:len(x) - args.images], y[:len(x) - args.images]  # never the validation digits
            record = {"run": Path(path).name, "binarize": cfg.get("binarize", "none"), "split": split,
                      "sample_layer": sampled_layer(run.net, cfg.get("sample_layer")), "loss": loss,
                      "code_entropy_bits": code_bits,
                      "entropy": {n: entropy_per_pixel(t) for n, t in targets.items()},
                      "class_mean_floor": {n: class_mean_floor(train_x if n == "grey" else
                                                               binarize(train_x, "threshold"), train_y, t, ys)
                                           for n, t in targets.items()}}
            records.append(record)
            for name in targets:
                rows.append([record["run"], record["binarize"], record["sample_layer"], split, name,
                             *(loss[c][name] for c in CODES), record["entropy"][name],
                             record["class_mean_floor"][name], code_bits])
            print("  ".join(_report.fmt(v, 4) for v in rows[-2]))
            print("  ".join(_report.fmt(v, 4) for v in rows[-1]))
        print(f"{path}: {time.perf_counter() - start:.0f} s")
    header = ["run", "trained on", "k", "split", "targets", "sampled code", "mean-field code", "most-likely code",
              "target entropy (floor)", "class-mean floor (21)",
              "code entropy (bits / digit)"]
    text = (f"Reverse loss of (22), binary cross-entropy per pixel, under each reading. Command: "
            f"{_report.command_line()}. Sampled code: mean over {args.draws} draws per digit (seed {args.seed}); "
            f"{args.images} digits per split; validation = the last {args.images} training digits.")
    md = _report.write_markdown(args.out / "sampled_layer_loss.md", "What (22)'s reverse loss measures",
                                [text, _report.table(header, rows)])
    (args.out / "sampled_layer_loss.json").write_text(json.dumps(records, indent=1))
    print(f"saved {md} and sampled_layer_loss.json ({len(records)} records)")


if __name__ == "__main__":
    main()
