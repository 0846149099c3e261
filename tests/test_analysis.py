"""The analysis scripts end to end on tiny settings, and the estimators they report against exact values."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _brute_force import single_thread  # noqa: F401 (a fixture)

from pyro_dcim import DCIM, bidirectional_loss, discriminative_loss, sampled_layer_loss
from pyro_dcim.approximation_error import class_kl, compare_marginals, fraction_within, random_dcim
from pyro_dcim.data import load_dataset
from pyro_dcim.inference import (
    exact_log_likelihood,
    exact_marginals,
    exact_posterior,
    importance_bounds,
    importance_log_likelihood,
    importance_marginals,
    k_sample_bounds,
    mean_field_marginals,
)
from pyro_dcim.quality import sample_quality
from pyro_dcim.training.checkpoint import model_state, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = {"discriminative": discriminative_loss, "bidirectional": bidirectional_loss,
              "sampled-layer": sampled_layer_loss}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> list[Path]:
    """Run folders of a tiny 784-12-8-10 net trained for 30 steps with each objective."""
    x, y = load_dataset("mnist-subset", "train")
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for i, (name, loss) in enumerate(OBJECTIVES.items()):
        torch.manual_seed(i)
        net = DCIM.from_spec([12, 8, 10], input_shape=(1, 28, 28))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for step in range(30):
            batch = slice(step * 50, step * 50 + 50)
            opt.zero_grad()
            loss(net, x[batch], y[batch]).total.backward()
            opt.step()
        run = root / name
        run.mkdir()
        save_checkpoint(run / "checkpoint.pt", {"model": model_state(net)})
        (run / "config.json").write_text(json.dumps({"config": {"objective": name, "dataset": "mnist-subset"}}))
        runs.append(run)
    return runs


def _script(name: str, *args: str, quick: bool = True) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / name), *(["--quick"] if quick else []), *args],
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _table_rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))] for line in md.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_approximation_error_script_writes_tables_and_plot(tmp_path, tiny_runs):
    out = _script("approximation_error.py", "--runs", *map(str, tiny_runs), "--out", str(tmp_path))
    assert "part 1" in out and "part 2" in out and "part 3" in out
    assert (tmp_path / "approximation_random_nets.png").read_bytes()[:8] == PNG
    assert (tmp_path / "approximations_kl.png").read_bytes()[:8] == PNG
    part1 = (tmp_path / "approximation_random_nets.md").read_text()
    kl, goal, mae, gaps = (_table_rows(t)[1:] for t in part1.split("\n\n") if t.startswith("|"))
    assert len(kl) == len(mae) == len(gaps) == 4           # 2 unit types x 2 scales in --quick
    assert all(float(v) >= 0 for r in kl for v in r[2:])
    assert all(abs(float(r[2])) < 1e-6 and abs(float(r[3])) < 1e-6 for r in mae)  # x1: (2) and AP2 are exact
    assert max(float(r[5]) for r in mae) > 1e-3            # deeper layers are not
    assert all(float(v) >= -1e-9 for r in gaps for v in r[2:])   # the variational bounds are bounds
    assert len(goal) == 2                                  # s = 4, both encodings
    part2 = _table_rows((tmp_path / "approximation_trained_nets.md").read_text().split("\n\n| run | KL(anc")[0])
    assert [r[0].split()[0] for r in part2[1:]] == list(OBJECTIVES)
    assert all(0 <= float(r[3]) <= 1 and float(r[2]) >= 0 for r in part2[1:])
    part3 = _table_rows((tmp_path / "estimator_quality.md").read_text())
    assert len(part3) == 3 and all(0.5 <= float(r[8]) <= 1 for r in part3[1:])


def test_generator_likelihood_script_writes_tables_and_plots(tmp_path, tiny_runs):
    out = _script("generator_likelihood.py", "--runs", *map(str, tiny_runs[1:]), "--out", str(tmp_path),
                  "--truth", str(tmp_path / "absent.json"))
    assert "likelihood" in out and "quality" in out
    grids = sorted(tmp_path.glob("samples_*.png"))
    assert len(grids) == 6 and all(g.read_bytes()[:8] == PNG for g in grids)
    rows = _table_rows((tmp_path / "generator_likelihood.md").read_text())
    lik = [r for r in rows[1:] if "±" in r[2]]
    assert len(lik) == 2                                   # one row per run
    for r in lik:
        nll, unconditional = float(r[2].split()[0]), float(r[3].split()[0])
        gap, bound, mean_field = float(r[5].split()[0]), float(r[6].split()[0]), float(r[7])
        assert nll > 0 and unconditional > 0 and mean_field > 0 and math.isfinite(gap) and bound > 0
    records = json.loads((tmp_path / "generator_likelihood.json").read_text())
    assert records["truth"] == [] and [r["run"] for r in records["cheap"]] == [r[0] for r in lik]
    # a second report at the same settings keeps the measured rows; other settings measure again
    again = _script("generator_likelihood.py", "--runs", *map(str, tiny_runs[1:]), "--out", str(tmp_path),
                    "--truth", str(tmp_path / "absent.json"), "--no-quality")
    assert "measuring" not in again and json.loads((tmp_path / "generator_likelihood.json").read_text()) == records
    other = _script("generator_likelihood.py", "--runs", str(tiny_runs[1]), "--steps", "4", "--out", str(tmp_path),
                    "--truth", str(tmp_path / "absent.json"), "--no-quality")
    assert other.count("measuring") == 1
    quality = [r for r in rows if r[1] in ("mean", "sample-layer", "ancestral")]
    assert len(quality) == 6 and all(0 <= float(r[2]) <= 1 for r in quality)


def test_bdmc_sweep_script_keeps_rows_and_adds_new_ones(tmp_path, tiny_runs):
    _script("bdmc_sweep.py", str(tiny_runs[1]), "--steps", "2", "--images", "2", "--chains", "2",
            "--out", str(tmp_path), quick=False)
    _script("bdmc_sweep.py", str(tiny_runs[1]), "--steps", "2", "20", "--images", "2", "--chains", "2",
            "--out", str(tmp_path), quick=False)
    done = json.loads((tmp_path / "bdmc_sweep.json").read_text())
    assert sorted(done) == ["forward-2-2x2", "forward-20-2x2"]
    assert all(len(r["lower"]) == 2 and r["gap_mean"] == r["gap_mean"] for r in done.values())
    assert len({r["net"] for r in done.values()}) == 1                    # both rows name the same net
    assert "different trainings" not in (tmp_path / "bdmc_sweep.md").read_text()
    done["forward-2-2x2"].pop("net")                                      # a row from before nets were named
    (tmp_path / "bdmc_sweep.json").write_text(json.dumps(done))
    _script("bdmc_sweep.py", str(tiny_runs[1]), "--steps", "2", "--images", "2", "--chains", "2",
            "--out", str(tmp_path), quick=False)
    assert "before nets were recorded" in (tmp_path / "bdmc_sweep.md").read_text()
    assert (tmp_path / "bdmc_sweep.png").read_bytes()[:8] == PNG


def test_ais_truth_script_resumes_by_chunks(tmp_path, tiny_runs):
    args = [str(tiny_runs[1]), "--steps", "3", "--chains", "2", "--chunk", "2", "--out", str(tmp_path)]
    out = _script("ais_truth.py", *args, "--images", "3", quick=False)
    assert out.count("digits ") == 2                      # chunks {0, 1} and {2}
    first = json.loads((tmp_path / "ais_truth.json").read_text())
    out = _script("ais_truth.py", *args, "--images", "4", quick=False)
    assert out.count("digits ") == 1                      # only digit 3 is new
    (record,) = json.loads((tmp_path / "ais_truth.json").read_text()).values()
    assert sorted(record["digits"], key=int) == ["0", "1", "2", "3"]
    (old,) = first.values()
    assert all(record["digits"][i] == old["digits"][i] for i in old["digits"])
    assert all(len(d["log_weights"]) == 2 and d["estimate"] < 0 for d in record["digits"].values())
    (row,) = _table_rows((tmp_path / "ais_truth.md").read_text())[1:]
    assert row[3] == "4" and float(row[4]) > 0
    # a second process on other digits, in its own folder, then merged: digit 4 is new, 0-3 are kept
    _script("ais_truth.py", *args[:-1], str(tmp_path / "other"), "--digits", "3", "5", quick=False)
    out = _script("ais_truth.py", *args, "--images", "5", "--merge", str(tmp_path / "other" / "ais_truth.json"),
                  quick=False)
    assert "digits " not in out
    (merged,) = json.loads((tmp_path / "ais_truth.json").read_text()).values()
    assert sorted(merged["digits"], key=int) == ["0", "1", "2", "3", "4"]
    assert merged["digits"]["2"] == record["digits"]["2"]
    # the generator report heads with these records: mean over the five digits, p(x0) >= p(x0 | y) p(y)
    _script("generator_likelihood.py", "--runs", str(tiny_runs[1]), "--truth", str(tmp_path / "ais_truth.json"),
            "--no-quality", "--out", str(tmp_path / "report"))
    (truth,) = json.loads((tmp_path / "report" / "generator_likelihood.json").read_text())["truth"]
    nll = [-d["estimate"] for d in merged["digits"].values()]
    assert truth["digits"] == 5 and truth["steps"] == 3 and truth["nll"] == pytest.approx(sum(nll) / 5)
    assert truth["unconditional_bound"] > truth["nll"]   # −log p(y) > 0 added to every digit
    md = (tmp_path / "report" / "generator_likelihood.md").read_text()
    assert "AIS at many temperatures" in md and f"{truth['nll']:.1f} ±" in md
    # --truth-only redoes that section from the records alone and keeps the measured rest
    cheap = json.loads((tmp_path / "report" / "generator_likelihood.json").read_text())["cheap"]
    rest = md[md.index("## Cheaper settings"):]
    merged["digits"]["0"]["estimate"] -= 10.0                     # a record that changed
    (tmp_path / "ais_truth.json").write_text(json.dumps({"r": merged}))
    _script("generator_likelihood.py", "--truth-only", "--truth", str(tmp_path / "ais_truth.json"),
            "--out", str(tmp_path / "report"))
    again = json.loads((tmp_path / "report" / "generator_likelihood.json").read_text())
    assert again["cheap"] == cheap and again["truth"][0]["nll"] == pytest.approx(truth["nll"] + 2.0)
    md = (tmp_path / "report" / "generator_likelihood.md").read_text()
    assert md.endswith(rest) and md.count("AIS at many temperatures") == 1 and "--truth-only" in md
    absent = subprocess.run([sys.executable, str(ROOT / "analysis" / "generator_likelihood.py"), "--truth-only",
                             "--truth", str(tmp_path / "ais_truth.json"), "--out", str(tmp_path / "empty")],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert absent.returncode != 0 and "needs an earlier report" in absent.stderr



def test_ais_truth_refuses_digits_of_another_net(tmp_path, tiny_runs):
    """A record names its net: another net's digits (a retrained run) are not added to it, nor merged."""
    args = ["--steps", "2", "--chains", "2", "--out", str(tmp_path)]
    _script("ais_truth.py", str(tiny_runs[1]), *args, "--images", "2", quick=False)
    (record,) = json.loads((tmp_path / "ais_truth.json").read_text()).values()
    assert len(record["net"]) == 40
    imposter = tmp_path / "runs" / tiny_runs[1].name          # same folder name, so the same record key
    shutil.copytree(tiny_runs[2], imposter)
    bad = subprocess.run([sys.executable, str(ROOT / "analysis" / "ais_truth.py"), str(imposter), *args,
                          "--images", "3"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "not the net whose digits this record holds" in bad.stderr
    # an old record without a fingerprint is checked by its stored mean-field losses
    legacy = json.loads((tmp_path / "ais_truth.json").read_text())
    for r in legacy.values():
        del r["net"]
    (tmp_path / "ais_truth.json").write_text(json.dumps(legacy))
    bad = subprocess.run([sys.executable, str(ROOT / "analysis" / "ais_truth.py"), str(imposter), *args,
                          "--images", "3"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "mean-field loss of digit 0" in bad.stderr
    out = _script("ais_truth.py", str(tiny_runs[1]), *args, "--images", "3", quick=False)
    assert out.count("digits ") == 1                      # the right net passes the check and adds digit 2
    # merging a record of another net into --out is refused
    _script("ais_truth.py", str(imposter), *args[:-1], str(tmp_path / "other"), "--images", "1", quick=False)
    bad = subprocess.run([sys.executable, str(ROOT / "analysis" / "ais_truth.py"), str(tiny_runs[1]), *args,
                          "--images", "3", "--merge", str(tmp_path / "other" / "ais_truth.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "computed with another net" in bad.stderr

# -- the estimators behind the tables -------------------------------------------------------
def _tiny_reverse_case(scale: float, seed: int = 0):
    net = random_dcim([5, 4], 8, 3, scale, seed=seed)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (12,), generator=g)
    x0 = torch.bernoulli(torch.sigmoid(net.reverse_mean_field(y).logits.detach()), generator=g)
    return net, x0, y


def test_importance_log_likelihood_equals_exact_within_3_stderr():
    net, x0, y = _tiny_reverse_case(1.5)
    exact = exact_log_likelihood(net, x0, y)
    torch.manual_seed(0)
    est = importance_log_likelihood(net, x0, y, 5000)
    z = (est.estimate - exact) / est.stderr
    assert est.ess.min() > 100                             # the check is not vacuous
    assert (z.abs() <= 3).all(), z
    # the largest K-sample bound agrees as well, within its own (group) standard error
    torch.manual_seed(1)
    top = importance_bounds(net, x0, y, ks=(1, 1000), groups=4)[-1]
    assert ((top.estimate - exact).abs() <= 3 * top.stderr + 1e-3).all()


def test_k_sample_bounds_are_nondecreasing_and_below_exact():
    net, x0, y = _tiny_reverse_case(3.0, seed=1)           # large weights: the bounds are visibly loose at K = 1
    exact = exact_log_likelihood(net, x0, y)
    torch.manual_seed(0)
    bounds = importance_bounds(net, x0, y, ks=(1, 10, 100, 1000), groups=3)
    means = [float(b.estimate.mean()) for b in bounds]
    assert means == sorted(means)
    assert means[0] < float(exact.mean()) - 0.05
    assert means[-1] <= float(exact.mean()) + 3 * float(bounds[-1].stderr.pow(2).mean().sqrt() / len(x0) ** 0.5)
    assert [b.groups for b in bounds] == [3000, 300, 30, 3]
    assert all(1 <= float(b.ess.mean()) <= b.k for b in bounds)


def test_k_sample_bounds_of_equal_weights_are_that_weight():
    log_w = torch.full((20, 3), -2.5, dtype=torch.float64)
    for b in k_sample_bounds(log_w, (1, 4, 20)):
        torch.testing.assert_close(b.estimate, torch.full((3,), -2.5, dtype=torch.float64))
        torch.testing.assert_close(b.ess, torch.full((3,), float(b.k), dtype=torch.float64))
    with pytest.raises(ValueError, match="divisor"):
        k_sample_bounds(log_w, (3,))


def test_comparison_measures():
    net = random_dcim([6, 6], 10, 4, 4.0, seed=3)
    x0 = torch.bernoulli(torch.full((16, 10), 0.5, dtype=torch.float64))
    exact = exact_marginals(net, x0)
    same = compare_marginals(exact, exact, torch.zeros(16, dtype=torch.long))
    assert same.hidden_mae == [0.0, 0.0] and same.class_kl == pytest.approx(0.0, abs=1e-12)
    assert same.argmax_agreement == 1.0
    err = compare_marginals(mean_field_marginals(net, x0), exact)
    assert err.hidden_mae[0] < 1e-10 < err.hidden_mae[1]   # x1 exact, x2 not, at this scale
    assert err.class_kl > 1e-4
    kl = class_kl(exact.classes, mean_field_marginals(net, x0).classes)
    assert (kl >= -1e-12).all() and kl.shape == (16,)
    # W ~ N(0, s²/fan-in): the scale is the spread of W·sqrt(fan-in)
    big = random_dcim([200], 400, 4, 2.0, seed=0)
    assert float(big.layers[0].weight.detach().std() * 400 ** 0.5) == pytest.approx(2.0, rel=0.05)


def test_fraction_within_mcse():
    net = random_dcim([6, 6], 10, 4, 1.0, seed=4)
    x0 = torch.bernoulli(torch.full((8, 10), 0.5, dtype=torch.float64))
    y = torch.randint(4, (8,))
    exact = exact_posterior(net, x0, y)
    torch.manual_seed(0)
    est = importance_marginals(net, x0, 3000, y)
    assert fraction_within(est, exact) >= 0.95
    biased = dataclasses.replace(est, hidden=[(h + 0.2).clamp(max=1) for h in est.hidden])
    assert fraction_within(biased, exact) < 0.5
    with pytest.raises(ValueError, match="standard errors"):
        fraction_within(exact, exact)


def test_sample_quality_measures(tiny_runs):
    from pyro_dcim import load_model

    net = load_model(tiny_runs[1])
    x, y = load_dataset("mnist-subset", "test")
    mean = sample_quality(net, x[:300], y[:300], "mean", per_class=5)
    assert mean.diversity == pytest.approx(0.0, abs=1e-6) and 0 <= mean.consistency <= 1
    anc = sample_quality(net, x[:300], y[:300], "ancestral", per_class=5)
    assert anc.relative_diversity > 0.3 and anc.real_diversity > mean.real_diversity  # binarised digits differ more


def test_scripts_write_untracked_output_unless_told_and_leave_the_committed_results_alone():
    """By default the scripts write under out/ (git-ignored); analysis/results and benchmarks/results
    change only when passed explicitly."""
    committed = {p: p.read_bytes() for folder in ("analysis/results", "benchmarks/results")
                 for p in (ROOT / folder).rglob("*") if p.is_file()}
    runs = [[str(ROOT / "analysis" / "reproduce_paper.py"), "--table-only"],
            [str(ROOT / "analysis" / "approximation_error.py"), "--quick", "--parts", "1"],
            [str(ROOT / "benchmarks" / "run.py"), "--only"]]
    written = []
    for cmd in runs:
        done = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        written += [Path(line.split("wrote ", 1)[1]) for line in done.stdout.splitlines() if "wrote " in line]
    assert len(written) >= 3
    for path in written:
        path = path if path.is_absolute() else ROOT / path
        assert path.is_file() and path.is_relative_to(ROOT / "out"), path
        assert subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0, path
    assert all(p.read_bytes() == data for p, data in committed.items())


def test_semi_supervised_script_reports_cluster_accuracy_and_the_spread_over_seeds(tmp_path):
    from pyro_dcim.training import TrainConfig, train

    small = dict(arch="16-10", objective="generative", train_size=300, val_size=100, epochs=1, batch_size=50,
                 particles=2, binarize="dynamic", augment="none", figures=False)
    runs = [train(TrainConfig(**small, labels=labels, seed=seed, out=str(tmp_path / f"l{labels}-s{seed}")),
                  log=lambda *_: None).run_dir for labels, seed in ((20, 0), (20, 1), (0, 0))]
    _script("semi_supervised.py", *map(str, runs), "--images", "50", "--particles", "4", "--out",
            str(tmp_path / "out"), quick=False)
    md = (tmp_path / "out" / "semi_supervised.md").read_text()
    rows = _table_rows(md)
    spread = {r[1]: r for r in rows if r[0] == "generative"}
    assert spread["20"][7] == "2" and float(spread["20"][9]) >= 0            # two seeds: a mean and an s.d.
    assert spread["0 (10 components)"][7] == "1" and spread["0 (10 components)"][9] == "–"
    assert spread["20"][5:7] == ["0", "uniform"]                              # class threshold, p(y)
    summaries = [json.loads((r / "summary.json").read_text())["test_acc"] for r in runs[:2]]
    assert float(spread["20"][8]) == pytest.approx(100 * (1 - sum(summaries) / 2), abs=0.006)
    per_run = {r[0]: r for r in rows if r[0].startswith("l")}
    assert per_run["l0-s0"][4] == "–" and 0.1 <= float(per_run["l0-s0"][10]) <= 1     # a cluster accuracy
    # each run's row is recorded and reused: the table survives its run folders
    records = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert records == ["semi-l0-s0.json", "semi-l20-s0.json", "semi-l20-s1.json"]
    for r in runs:
        shutil.rmtree(r)
    _script("semi_supervised.py", *map(str, runs), "--images", "50", "--particles", "4", "--out",
            str(tmp_path / "out"), quick=False)
    assert _table_rows((tmp_path / "out" / "semi_supervised.md").read_text()) == rows


def test_writing_styles_script_measures_every_lowest_sampled_layer(tmp_path, tiny_runs):
    _script("writing_styles.py", str(tiny_runs[1]), "--per-class", "5", "--classifier", str(tmp_path / "none.pt"),
            "--temperatures", "3", "1:2", "--out", str(tmp_path), quick=False)
    rows = _table_rows((tmp_path / "writing_styles.md").read_text())[1:]
    names = [r[0].split(",")[0].split(":")[0] for r in rows]
    assert names == ["sample-layer", "sample-layer", "sample-layer --layer 1", "sample-layer --layer 1",
                     "sample-layer --layer 1", "ancestral"]
    # x^1 is sampled only with --layer 1: its temperature makes a row there alone
    assert [r[0].rsplit(", ", 1)[-1] for r in rows if "temperature" in r[0]] == [
        "--temperature 3", "--temperature 3", "--temperature 1:2"]
    for r in rows:
        assert 0 <= float(r[1]) <= 1 and r[2] == "nan" and float(r[3]) > 0
    # sampling x^1 as well as x^2 is a different generator from Fig. 3's mode; so is a flatter draw of x^2
    assert rows[0][1:] != rows[2][1:] and rows[0][1:] != rows[1][1:] and rows[2][1:] != rows[4][1:]
    assert (tmp_path / f"writing_styles_{tiny_runs[1].name}_sample-layer-K1.png").read_bytes().startswith(PNG)
    assert (tmp_path / f"writing_styles_{tiny_runs[1].name}_sample-layer-K1-T3.png").read_bytes().startswith(PNG)
    assert (tmp_path / f"writing_styles_{tiny_runs[1].name}_sample-layer-K1-T1_2.png").read_bytes().startswith(PNG)


def test_is_bias_against_another_results_folder_checks_the_net_and_averages_the_differences(tmp_path):
    def folder(name, nll, net="abc"):
        d = tmp_path / name
        d.mkdir()
        (d / "settings-common.json").write_text(json.dumps({"net": net, "seed": 0, "split": "test"}))
        rows = "image,label,nll_conditional\n" + "".join(f"{i},0,{v}\n" for i, v in nll.items())
        (d / "per_image.csv").write_text(rows)
        return d / "per_image.csv"

    short = folder("short", {0: 101.0, 1: 93.0, 2: 80.5, 5: 70.0})
    long = folder("long", {0: 100.0, 1: 92.0, 2: 78.5, 7: 1.0})
    out = _script("is_bias.py", str(short), "--against", str(long), quick=False)
    assert "on 3 digits" in out and "+1.33" in out            # (1 + 1 + 2) / 3 over the digits both hold
    other = folder("other", {0: 100.0, 1: 92.0}, net="xyz")
    bad = subprocess.run([sys.executable, str(ROOT / "analysis" / "is_bias.py"), str(short), "--against", str(other)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not the same net" in bad.stderr


def test_m2_peer_trains_on_the_runs_labels_and_learns_from_them(tmp_path):
    sys.path.insert(0, str(ROOT / "analysis"))
    from m2_peer import M2, train_m2

    from pyro_dcim.training import TrainConfig, train
    from pyro_dcim.training.batches import load_splits

    cfg = dict(arch="16-10", objective="generative", labels=20, train_size=600, val_size=100, batch_size=50,
               lr=3e-3, binarize="dynamic", augment="none", epochs=1, particles=2, figures=False)
    record = train_m2(TrainConfig(**cfg), seconds=600, log=lambda *_: None, max_steps=30)
    assert record["steps"] == 30 and record["labels"] == 20 and record["alpha"] == pytest.approx(0.1 * 600 / 20)
    assert record["test_acc"] >= 0.2                  # chance 0.1; measured 0.38 after 30 steps
    # an unlabelled batch enumerates the class: the guide's class distribution is the classifier's
    m2 = M2()
    x = torch.bernoulli(torch.full((3, 784), 0.2))
    import pyro
    from pyro.infer import config_enumerate

    trace = pyro.poutine.trace(config_enumerate(m2.guide, "parallel", expand=True)).get_trace(x, torch.full((3,), -1))
    assert trace.nodes["y"]["infer"]["enumerate"] == "parallel"
    assert torch.allclose(trace.nodes["y"]["fn"].logits, torch.log_softmax(m2.encoder_y(x), -1), atol=1e-6)
    # the script end to end on a fit --labels run, within a seconds budget
    run = train(TrainConfig(**cfg, out=str(tmp_path / "run")), log=lambda *_: None).run_dir
    _script("m2_peer.py", str(run), "--seconds", "3", "--out", str(tmp_path / "out"), quick=False)
    saved = json.loads((tmp_path / "out" / "m2-run.json").read_text())
    assert saved["labels"] == 20 and 0 <= saved["test_acc"] <= 1 and saved["steps"] >= 1
    assert int(load_splits(TrainConfig(**cfg), torch.device("cpu")).labelled.sum()) == saved["labels"]


def test_label_runs_names_every_run_and_the_learned_prior_twins():
    sys.path.insert(0, str(ROOT / "analysis"))
    from label_runs import runs_for

    runs = runs_for([100], [0, 1], unsupervised=True, learned_prior=True)
    assert sorted(runs) == sorted(["l100-s0", "disc-l100-s0", "unsupervised-s0", "unsupervised-prior-s0",
                                   "l100-s1", "disc-l100-s1", "unsupervised-s1", "unsupervised-prior-s1"])
    assert runs["unsupervised-prior-s1"][-2:] == ["--class-prior", "learned"]
    assert "--class-prior" not in runs["unsupervised-s1"]
    assert sorted(runs_for([], [2], unsupervised=True)) == ["unsupervised-s2"]


def test_sampled_layer_loss_script_measures_each_reading_of_the_reverse_loss(tmp_path, tiny_runs):
    import torch.nn.functional as F

    from pyro_dcim.training.checkpoint import load_model

    _script("sampled_layer_loss.py", str(tiny_runs[2]), "--images", "400", "--draws", "8", "--out", str(tmp_path),
            quick=False)
    records = json.loads((tmp_path / "sampled_layer_loss.json").read_text())
    assert [r["split"] for r in records] == ["validation", "training"]
    val = records[0]
    net = load_model(tiny_runs[2]).eval()
    x, y = load_dataset("mnist-subset", "train")
    xv = x[-400:]
    with torch.no_grad():
        k = net.num_layers - 1
        a = net.forward_mean_field(xv).preactivations[k - 1]
        mf = F.binary_cross_entropy_with_logits(net.reverse_mean_field(net.units.mean(a), layer=k).logits, xv)
        # the objective's own reverse term, as fit reports it, over many draws of the code
        gen = torch.Generator().manual_seed(1)
        objective = sum(float(sampled_layer_loss(net, xv, y[-400:], generator=gen).reverse_nll_per_pixel)
                        for _ in range(20)) / 20
    assert val["loss"]["mean field"]["grey"] == pytest.approx(float(mf), rel=1e-5)
    assert val["loss"]["sampled"]["grey"] == pytest.approx(objective, rel=0.01)
    assert val["loss"]["mean field"]["grey"] != val["loss"]["sampled"]["grey"]
    grey = xv.double()
    assert val["entropy"]["thresholded"] == 0.0
    assert val["entropy"]["grey"] == pytest.approx(float(F.binary_cross_entropy(grey, grey)), rel=1e-6)
    assert all(val["loss"][code]["grey"] > val["entropy"]["grey"] for code in val["loss"])
    rows = _table_rows((tmp_path / "sampled_layer_loss.md").read_text())
    assert len(rows) == 5 and rows[1][3:5] == ["validation", "grey"]
    probs = torch.sigmoid(net.units.bit_logits(a)).double()
    bits = -(probs * probs.log2() + (1 - probs) * (1 - probs).log2()).sum(-1).mean()
    assert val["code_entropy_bits"] == pytest.approx(float(bits), rel=1e-4) and 0 < bits <= probs.shape[-1]
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "sampled_layer_loss.py"), str(tiny_runs[1]),
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "not sampled-layer" in done.stderr


def test_reproduce_paper_keeps_binarised_runs_out_of_the_paper_rows(monkeypatch, tmp_path):
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "analysis"))
    import reproduce_paper as rp

    from pyro_dcim.training import TrainConfig

    cfg = TrainConfig(**rp.EXPERIMENTS["cnn-sampled-layer"], binarize="threshold")
    args = argparse.Namespace(data_dir="d", device="cpu", tag="")
    assert rp.run_name("cnn-sampled-layer", cfg, "").endswith("-threshold-data")
    assert "--binarize threshold" in rp.command_line("cnn-sampled-layer", cfg, args)
    grey = {"experiment": "cnn-sampled-layer", "config": {"binarize": "none"}, "summary": {"val_acc": 0.98}}
    binary = {"experiment": "cnn-sampled-layer", "config": {"binarize": "threshold"}, "summary": {"val_acc": 0.99}}
    best = rp.best_runs([grey, binary])
    assert best["cnn-sampled-layer"] is grey and best["cnn-sampled-layer + threshold-binarised"] is binary
    # analysis/results/runs also holds other scripts' records: --table-only reads only this script's
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text(json.dumps(grey))
    (tmp_path / "runs" / "generator-x.json").write_text(json.dumps({"comparison": {}}))
    assert rp.paper_records(tmp_path) == [grey]
