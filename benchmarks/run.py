"""pyro_dcim benchmarks: one run, all cases side by side, ratios rather than absolute times.

    python benchmarks/run.py --quick                # a few minutes on 2 CPU cores
    python benchmarks/run.py --full --device cuda   # on a GPU

Prints tables and writes <machine>.json and latest.json, whose ``ratios`` object holds the
headline figures, into --out: by default out/benchmarks (untracked); pass
``--out benchmarks/results`` to update the committed results.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from pyro_dcim.allocator import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svi import bench_svi  # noqa: E402
from timing import machine_info  # noqa: E402
from training import bench_training  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "out" / "benchmarks"   # benchmarks/results only when asked


def _table(title: str, header: list[str], rows: list[list[object]]) -> str:
    lines = [f"\n## {title}", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rounds and cases (default)")
    size.add_argument("--full", action="store_true", help="more rounds, batch 1024 and the CNN everywhere")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--only", nargs="*", default=["training", "inference", "svi"],
                        help="sections to run: training inference svi approximations (the last: not by default)")
    parser.add_argument("--variants", action="store_true",
                        help="also time the bidirectional step with bf16 autocast and torch.compile (batch 128)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1, as the training loop; 0 = torch's default)")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="leave glibc's malloc thresholds alone (the CLIs call keep_freed_memory)")
    parser.add_argument("--machine", default=None, help="name for the results file (default: cpu-<host> / gpu name)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the results files (default "
                        "out/benchmarks, untracked; benchmarks/results updates the committed ones)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    full = args.full
    rounds, steps = (7, 20) if full else (5, 10)
    report: dict = {"machine": machine_info(device), "mode": "full" if full else "quick", "ratios": {}}
    report["machine"]["keep_freed_memory"] = not args.malloc_defaults and keep_freed_memory()
    out: list[str] = []

    if "training" in args.only:
        rows, training = [], {}
        for arch in ("dense", "cnn"):
            for batch in (128, 1024):
                if arch == "cnn" and batch == 1024 and not full and device.type == "cpu":
                    continue
                t = bench_training(arch, batch, device, rounds, steps if arch == "dense" else max(2, steps // 4),
                                   variants=args.variants and batch == 128)
                training[f"{arch}/{batch}"] = t
                d = t["discriminative"]
                rows.append([arch, batch, t["plain"] * 1e3, d * 1e3, t["bidirectional"] * 1e3,
                             t["sampled-layer"] * 1e3, d / t["plain"], t["bidirectional"] / d,
                             t["sampled-layer"] / d])
        report["training"] = training
        t = training["dense/128"]
        report["ratios"].update(disc_vs_plain=t["discriminative"] / t["plain"],
                                bidir_vs_disc=t["bidirectional"] / t["discriminative"],
                                sampled_vs_disc=t["sampled-layer"] / t["discriminative"])
        if "cnn/128" in training:
            t = training["cnn/128"]
            report["ratios"].update(cnn_disc_vs_plain=t["discriminative"] / t["plain"],
                                    cnn_bidir_vs_disc=t["bidirectional"] / t["discriminative"],
                                    cnn_sampled_vs_disc=t["sampled-layer"] / t["discriminative"])
        out.append(_table("Training step (ms; targets: disc/plain ≤ 1.10, bidir/disc ≤ 1.25, sampled/disc ≤ 2.1)",
                          ["arch", "batch", "plain", "disc", "bidir (21)", "sampled (22)", "disc/plain",
                           "bidir/disc", "sampled/disc"], rows))
        print(out[-1], flush=True)
        if args.variants:
            rows = [[k, t["bidirectional"] * 1e3, t["bidirectional+bf16"] * 1e3, t["bidirectional+compile"] * 1e3,
                     t["bidirectional"] / t["bidirectional+bf16"], t["bidirectional"] / t["bidirectional+compile"]]
                    for k, t in training.items() if "bidirectional+bf16" in t]
            out.append(_table("Bidirectional step: bf16 autocast and torch.compile (ms; speed-up = plain / variant)",
                              ["arch/batch", "fp32", "bf16", "compile", "bf16 speed-up", "compile speed-up"], rows))
            print(out[-1], flush=True)

    if "inference" in args.only:
        try:
            from inference_cost import bench_inference
        except ImportError as e:  # the inference engines are optional for this script
            print(f"\n(skipping inference: {e})")
        else:
            inf = bench_inference(device, full)
            report["inference"] = inf["table"]
            report["ratios"].update(inf["ratios"])
            out.append(inf["markdown"])
            print(out[-1], flush=True)

    if "svi" in args.only:
        svi = bench_svi(device, seconds=60.0 if full else 10.0)
        report["svi"] = svi
        ours, theirs = svi["mean-field objective"], svi["SVI TraceGraph_ELBO"]
        report["ratios"]["svi_epoch_vs_meanfield_epoch"] = theirs["seconds_per_epoch"] / ours["seconds_per_epoch"]
        out.append(_table(f"Pyro SVI vs our mean-field objective, {ours['seconds']:.0f} s each (dense, subset)",
                          ["method", "s/epoch", "epochs done", "val acc"],
                          [[m, r["seconds_per_epoch"], r["epochs"], r["val_acc"]] for m, r in svi.items()]))
        print(out[-1], flush=True)

    if "approximations" in args.only:
        from approximations import bench_approximations

        approx = bench_approximations(device, full)
        report["approximations"] = approx
        report["ratios"].update(approx["ratios"])
        out.append(_table("AP2 against the first-order pass (ms; goal AP2/(2) ≤ 2.2)",
                          ["arch/batch", "(2) pass", "AP2 pass", "ratio", "(2) step", "AP2 step", "ratio"],
                          approx["rows"]))
        print(out[-1], flush=True)

    name = args.machine or (f"gpu-{torch.cuda.get_device_name(device).replace(' ', '-')}" if device.type == "cuda"
                            else f"cpu-{platform.node() or 'local'}")
    report["markdown"] = "\n".join(out)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (args.out / f"{name}.json", args.out / "latest.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"\nratios: {json.dumps(report['ratios'], indent=1)}\nwrote {args.out / (name + '.json')}")
    return report


if __name__ == "__main__":
    main()
