"""Parts 2 and 4 of ``approximation_error.py``: the approximations on trained nets, against ancestral
sampling (part 2), and nets trained through an approximation (part 4)."""

from __future__ import annotations

import json
import time

import _report
import torch

from pyro_dcim.approximation_error import compare_marginals
from pyro_dcim.inference import (
    ancestral_marginals,
    importance_log_likelihood,
    mean_field_marginals,
    variational_posterior,
)
from pyro_dcim.inference.marginals import Marginals


def part2(s: dict, runs: list[str]) -> str:
    if not runs:
        return "Part 2 was not run: give trained run folders with `--runs`."
    header = ["run", "images", "KL(anc ‖ mf)", "top-1 agree", "acc mf", "acc ancestral", "class MCSE",
              "fwd MAE x1", "fwd MAE x_{n-1}", "rev pixel MAE", "rev pixel max err", "rev hidden MAE", "seconds"]
    approx_header = ["run", "KL(anc ‖ (2))", "KL(anc ‖ AP2)", f"KL(anc ‖ var), first {s['var_images']}",
                     "KL(anc ‖ (2)) same images", "MAE x_{n-1} (2)", "MAE x_{n-1} AP2", "rev pixel MAE AP2",
                     "var bound log p(x0|y)", f"IS ({s['trained_is_samples']} samples)", "IS − bound", "IS ESS"]
    rows, approx_rows, found = [], [], {}
    for path in runs:
        run = _report.load_run(path)
        x0, y = run.test_data(s["trained_images"])
        torch.manual_seed(0)
        start = time.perf_counter()
        anc = ancestral_marginals(run.net, x0, s["samples"])
        fwd = compare_marginals(mean_field_marginals(run.net, x0), anc, y)
        classes = torch.arange(run.net.num_classes)
        anc_rev = ancestral_marginals(run.net, None, s["samples"], y=classes, direction="reverse")
        rev = compare_marginals(mean_field_marginals(run.net, y=classes, direction="reverse"), anc_rev)
        seconds = time.perf_counter() - start
        row = [run.label, len(x0), fwd.class_kl, fwd.argmax_agreement, fwd.accuracy["mean_field"],
               fwd.accuracy["ancestral"], float(anc.stderr.classes.mean()), fwd.hidden_mae[0], fwd.hidden_mae[-1],
               rev.image_mae, rev.image_max_error, sum(rev.hidden_mae) / len(rev.hidden_mae), seconds]
        rows.append(row)
        found[run.objective] = row
        approx_rows.append(part2_approximations(s, run, x0, y, anc, anc_rev, fwd))
        print("part 2: " + "  ".join(_report.fmt(v, 3) for v in row))
    settings = (f"Settings: the first {s['trained_images']} test digits of each run's dataset (intensities as given to "
                f"the net); ancestral = exact sampling of the forward chain (eq. 13) with {s['samples']} samples per "
                "image, Rao-Blackwellised (class MCSE: its mean standard error of p(x^n | x^0)); reverse: per class, "
                f"{s['samples']} ancestral samples of the reverse chain (eq. 17) against the reverse mean field. "
                "MAE = mean |mean field − sampling| over units (hidden) or pixels (image).")
    summary = ""
    if "discriminative" in found and "bidirectional" in found:
        d, b = found["discriminative"], found["bidirectional"]
        better = "smaller" if b[2] < d[2] else "larger"
        summary = (f"Training with (21) makes the forward approximation's class KL {better} than discriminative "
                   f"training ({b[2]:.3g} vs {d[2]:.3g} nats; top-1 agreement {b[3]:.3f} vs {d[3]:.3f}), and the "
                   f"reverse mean-field image marginals are off by {b[9]:.3g} vs {d[9]:.3g} per pixel on average.")
    approx_note = (f"The approximations on the same images against the same ancestral samples; variational on the "
                   f"first {s['var_images']} images only (one class-clamped fit per class), and its bound on "
                   f"log p(x^0 | y) (nats per image) against importance sampling with the mean-field guide "
                   f"({s['trained_is_samples']} samples), itself a stochastic lower bound: 'IS − bound' is a lower "
                   "bound on the variational gap. (AIS, the better reference, was not in this branch.)")
    return "\n\n".join([settings, _report.table(header, rows, 3), summary, approx_note,
                        _report.table(approx_header, approx_rows, 3)])


def part2_approximations(s: dict, run, x0, y, anc, anc_rev, fwd) -> list:
    """AP2 and variational against ancestral sampling on a trained net, and the variational bound against IS."""
    net, classes = run.net, torch.arange(run.net.num_classes)
    ap2 = compare_marginals(mean_field_marginals(net, x0, approximation="ap2"), anc, y)
    ap2_rev = compare_marginals(mean_field_marginals(net, y=classes, direction="reverse", approximation="ap2"),
                                anc_rev)
    k = s["var_images"]
    sub = Marginals([h[:k] for h in anc.hidden], None if anc.classes is None else anc.classes[:k],
                    method=anc.method, direction=anc.direction)
    var = compare_marginals(mean_field_marginals(net, x0[:k], approximation="variational"), sub)
    first = compare_marginals(mean_field_marginals(net, x0[:k]), sub)
    with torch.no_grad():
        bound = variational_posterior(net, x0[:k], y=y[:k], direction="reverse").elbo
        torch.manual_seed(1)
        imp = importance_log_likelihood(net, x0[:k], y[:k], s["trained_is_samples"])
    return [run.label, fwd.class_kl, ap2.class_kl, var.class_kl, first.class_kl, fwd.hidden_mae[-1],
            ap2.hidden_mae[-1], ap2_rev.image_mae, float(bound.mean()), float(imp.estimate.mean()),
            float((imp.estimate - bound).mean()), float(imp.ess.median())]


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins: ``Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)|``."""
    conf, pred = probs.max(-1)
    correct = (pred == y).to(probs.dtype)
    which = (conf * bins).long().clamp(max=bins - 1)
    total = probs.new_zeros(())
    for b in range(bins):
        inside = which == b
        if inside.any():
            total = total + inside.sum() / len(y) * (correct[inside].mean() - conf[inside].mean()).abs()
    return float(total)


@torch.no_grad()
def part4(s: dict, runs: list[str]) -> str:
    if not runs:
        return "Part 4 was not run: give run folders trained with different `--approximation` with `--train-runs`."

    header = ["run", "trained with", "units", "dataset", "s / epoch", "val acc", "test acc (2)", "test acc AP2",
              "test NLL (2)", "test NLL AP2", "ECE (2)", "ECE AP2", "test rev loss / px (own)",
              f"var bound log p(x0|y), {s['var_images']} test"]
    rows = []
    for path in runs:
        run = _report.load_run(path)
        config = json.loads((run.path / "config.json").read_text())["config"]
        summary = json.loads((run.path / "summary.json").read_text())
        x0, y = run.test_data(10_000)
        scores = {}
        for a in ("first-order", "ap2"):
            probs = torch.cat([run.net.forward_mean_field(x0[i:i + 1000], approximation=a).logits.softmax(-1)
                               for i in range(0, len(x0), 1000)])
            scores[a] = (float((probs.argmax(-1) == y).double().mean()),
                         float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean()),
                         expected_calibration_error(probs, y))
        k = s["var_images"]
        bound = variational_posterior(run.net, x0[:k], y=y[:k], direction="reverse").elbo.mean()
        rows.append([run.path.name, config.get("approximation", "first-order"), config["units"], config["dataset"],
                     summary["seconds"] / max(summary["epochs"], 1), summary["val_acc"], scores["first-order"][0],
                     scores["ap2"][0], scores["first-order"][1], scores["ap2"][1], scores["first-order"][2],
                     scores["ap2"][2], summary["test_reverse_nll_per_pixel"], float(bound)])
        print("part 4: " + "  ".join(_report.fmt(v, 4) for v in rows[-1]))
    settings = ("Each run's whole test split, evaluated through both passes whatever it was trained with: accuracy, "
                "NLL = −log p̂(y | x^0) in nats, ECE with 15 equal-width confidence bins; the reverse loss is the "
                "run's own (binary cross-entropy per pixel of the class-conditional reverse pass of its "
                f"approximation); the variational bound on log p(x^0 | y) (first {s['var_images']} test images, "
                "nats per image) scores every generator with the same yardstick; s / epoch from the run's summary.")
    return "\n\n".join([settings, _report.table(header, rows, 4)])


