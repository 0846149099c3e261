"""How far the IS-K likelihood of a run is from AIS on the same digits: the bias of the protocol.

    python analysis/is_bias.py runs/eval/generative-e30/per_image-is-fitted.csv --record "generative-e30|1000|4"
    python analysis/is_bias.py runs/eval/generative-e30-ais20/per_image-ais.csv \
        --against runs/eval/generative-e30/calibration.csv

Reads the per-digit IS-K rows that ``python -m pyro_dcim.likelihood`` writes (``per_image-KIND.csv``)
and an AIS record of ``analysis/ais_truth.py`` (``analysis/results/ais_truth.json``, at a setting whose
BDMC gap is measured), and prints, over the digits both hold, the mean IS and AIS ``-log p(x0 | y)``
and the bias ``IS − AIS`` (> 0: IS overstates the nats) with its standard error over digits.  The
two must come from the same net and binarisation: the record's stored mean-field losses are
checked against the CSV's run (``--check``, default on).  ``--against CSV`` takes the reference from another
results folder of the same command instead (the per-digit AIS of ``--calibrate``, or a longer AIS run); the two
folders' net fingerprint, seed and split must agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bias(rows: list[dict], reference: dict[int, float]) -> dict:
    """``rows``' ``nll_conditional`` minus ``reference[image]`` over the digits both hold."""
    both = [r for r in rows if int(r["image"]) in reference]
    if len(both) < 2:
        raise SystemExit(f"only {len(both)} digits in both the CSV and the reference")
    is_nll = [float(r["nll_conditional"]) for r in both]
    ais_nll = [reference[int(r["image"])] for r in both]
    d = [a - b for a, b in zip(is_nll, ais_nll)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))
    return {"digits": len(both), "is": sum(is_nll) / len(d), "ais": sum(ais_nll) / len(d), "bias": mean,
            "bias_se": se, "bias_median": sorted(d)[len(d) // 2]}


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def same_digits_and_net(a: Path, b: Path) -> None:
    """Two results folders of ``python -m pyro_dcim.likelihood`` must score the same net on the same binarisation."""
    keys = ("net", "seed", "split")
    sa, sb = (json.loads((path.parent / "settings-common.json").read_text()) for path in (a, b))
    if any(sa.get(k) != sb.get(k) for k in keys):
        raise SystemExit(f"{a.parent} and {b.parent} differ in {[k for k in keys if sa.get(k) != sb.get(k)]}: "
                         "not the same net and digits")


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
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--record", help="key of the AIS record in ais_truth.json")
    ref.add_argument("--against", type=Path, help="a reference CSV of the same command on the same net and digits "
                                                  "(calibration.csv of --calibrate, or a per_image-ais.csv)")
    p.add_argument("--truth", type=Path, default=ROOT / "analysis" / "results" / "ais_truth.json")
    p.add_argument("--run", type=Path, help="the run folder, to check the record is its net (default: from the CSV's "
                                            "summary)")
    p.add_argument("--no-check", dest="check", action="store_false")
    args = p.parse_args()
    rows = read_rows(args.csv)
    if args.record:
        record = json.loads(args.truth.read_text())[args.record]
        if args.check:
            run = args.run or Path(record["run"])
            check_same_net(record, run, sorted(int(r["image"]) for r in rows if r["image"] in record["digits"]))
        reference = {int(k): -v["estimate"] for k, v in record["digits"].items()}
        name = f"AIS record {args.record}"
    else:
        if args.check:
            same_digits_and_net(args.csv, args.against)
        reference = {int(r["image"]): float(r["nll_conditional"]) for r in read_rows(args.against)}
        name = str(args.against)
    b = bias(rows, reference)
    print(f"{args.csv} against {name} on {b['digits']} digits: estimate {b['is']:.2f}, reference {b['ais']:.2f} "
          f"nats; bias estimate - reference {b['bias']:+.2f} ± {b['bias_se']:.2f} (median {b['bias_median']:+.2f})")


if __name__ == "__main__":
    main()
