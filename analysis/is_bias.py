"""How far the IS-K likelihood of a run is from AIS on the same digits: the bias of the protocol.

    python analysis/is_bias.py runs/eval/generative-e30/per_image-is-fitted.csv --record "generative-e30|1000|4"

Reads the per-digit IS-K rows that ``python -m pyro_dcim.likelihood`` writes (``per_image-KIND.csv``)
and an AIS record of ``analysis/ais_truth.py`` (``analysis/results/ais_truth.json``, at a setting whose
BDMC gap is measured), and prints, over the digits both hold, the mean IS and AIS ``-log p(x0 | y)``
and the bias ``IS − AIS`` (> 0: IS overstates the nats) with its standard error over digits.  The
two must come from the same net and binarisation: the record's stored mean-field losses are
checked against the CSV's run (``--check``, default on).  ``--out DIR`` adds a markdown line.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bias(rows: list[dict], record: dict) -> dict:
    digits = record["digits"]
    both = [r for r in rows if str(int(r["image"])) in digits]
    if len(both) < 2:
        raise SystemExit(f"only {len(both)} digits in both the CSV and the record")
    is_nll = [float(r["nll_conditional"]) for r in both]
    ais_nll = [-digits[str(int(r["image"]))]["estimate"] for r in both]
    d = [a - b for a, b in zip(is_nll, ais_nll)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))
    return {"digits": len(both), "is": sum(is_nll) / len(d), "ais": sum(ais_nll) / len(d), "bias": mean,
            "bias_se": se, "bias_median": sorted(d)[len(d) // 2]}


def check_same_net(record: dict, run: Path, images: list[int]) -> None:
    """The record's mean-field reverse losses must be this run's on the same binarised digits."""
    import torch
    import torch.nn.functional as F

    from pyro_dcim import load_model
    from pyro_dcim.data import load_dataset
    from pyro_dcim.training.runs import read_config

    net, config = load_model(run), read_config(run)
    x, y = load_dataset(config.get("dataset", "mnist-subset"), "test", config.get("data_dir"),
                        binarize_mode="sample", seed=0)
    idx = torch.tensor(images[:5])
    with torch.no_grad():
        mf = F.binary_cross_entropy_with_logits(net.reverse_mean_field(y[idx]).logits, x[idx],
                                                reduction="none").flatten(1).sum(1)
    stored = torch.tensor([record["digits"][str(i)]["mean_field"] for i in images[:5]])
    if not torch.allclose(mf.double(), stored.double(), atol=1e-3):
        raise SystemExit(f"{run}'s mean-field losses {mf.tolist()} differ from the record's {stored.tolist()}: "
                         "another net or binarisation")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path, help="per_image-KIND.csv of python -m pyro_dcim.likelihood")
    p.add_argument("--record", required=True, help="key of the AIS record in ais_truth.json")
    p.add_argument("--truth", type=Path, default=ROOT / "analysis" / "results" / "ais_truth.json")
    p.add_argument("--run", type=Path, help="the run folder, to check the record is its net (default: from the CSV's "
                                            "summary)")
    p.add_argument("--no-check", dest="check", action="store_false")
    args = p.parse_args()
    record = json.loads(args.truth.read_text())[args.record]
    with open(args.csv) as f:
        rows = list(csv.DictReader(f))
    if args.check:
        run = args.run or Path(record["run"])
        check_same_net(record, run, sorted(int(r["image"]) for r in rows if r["image"] in record["digits"]))
    b = bias(rows, record)
    print(f"{args.csv} against AIS record {args.record} on {b['digits']} digits: IS {b['is']:.2f}, AIS {b['ais']:.2f} "
          f"nats; bias IS - AIS {b['bias']:+.2f} ± {b['bias_se']:.2f} (median {b['bias_median']:+.2f})")


if __name__ == "__main__":
    main()
