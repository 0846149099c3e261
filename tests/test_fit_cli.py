"""The command lines: errors exit 2 with one line, --config reruns, figures and sample grids."""

import json
import re
import signal
import subprocess

import _paused_fit as paused_fit
import pytest
import torch
from PIL import Image

from pyro_dcim.cli import draw, fit

TINY = ["--arch", "32-10", "--train-size", "400", "--val-size", "200", "--epochs", "2", "--batch-size", "50",
        "--lr", "5e-3", "--no-figures"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def _is_png(path, size=None):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 100
        return im.size


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], ["not found in", "nowhere", "--data-dir"]),
    (["--arch", "(3,0,32) 10"], ["layer 1", "(3, 0, 32)"]),
    (["--arch", "512-abc-10"], ["cannot read spec"]),
    (["--arch", "64-3"], ["3 classes", "labels 0..9"]),
    (["--epochs", "-1"], ["epochs must be >= 0"]),
    (["--batch-size", "0"], ["batch size must be >= 1"]),
    (["--lr", "0"], ["learning rate must be > 0"]),
    (["--lr=-1e-3"], ["learning rate must be > 0"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert fit.main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = _error_line(capsys)
    for word in words:
        assert word in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unwritable_run_folder_is_refused_before_training(capsys):
    assert fit.main(TINY + ["--out", "/proc/pyro-dcim-test/run"]) == 2
    assert "cannot write to run folder /proc/pyro-dcim-test/run" in _error_line(capsys)


def test_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        fit.main(["--epochz", "3"])
    assert e.value.code == 2
    assert "unrecognized arguments: --epochz" in _error_line(capsys)


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fit.main(TINY + ["--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "--device cuda" in _error_line(capsys)


def test_existing_run_refused_then_config_reruns_it_identically(tmp_path, capsys):
    first = tmp_path / "first"
    assert fit.main(TINY + ["--out", str(first)]) == 0
    assert fit.main(TINY + ["--out", str(first)]) == 2
    assert "already holds a run" in _error_line(capsys)
    config = json.loads((first / "config.json").read_text())
    assert {"python", "torch", "pyro", "pyro_dcim"} <= set(config["versions"])
    assert config["config"]["arch"] == "32-10"
    second = tmp_path / "second"
    assert fit.main(["--config", str(first / "config.json"), "--out", str(second)]) == 0
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (first, second)]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    assert {"epoch", "train_acc", "val_acc", "forward_nll", "reverse_nll_per_pixel", "reverse_nll_sum",
            "seconds"} <= set(json.loads((first / "metrics.jsonl").read_text().splitlines()[0]))
    header = (first / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_acc,val_acc,forward_nll")


def test_figures_are_pngs_and_sample_regenerates_grids(tmp_path, capsys):
    run = tmp_path / "run"
    argv = [a for a in TINY if a != "--no-figures"]
    assert fit.main(argv + ["--arch", "32-32-10", "--objective", "sampled-layer", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "final: val_acc" in out and "reverse loss" in out
    for name in ("learning_curves.png", "samples_mean.png", "samples_sample-layer.png"):
        _is_png(run / name)
        (run / name).unlink()
    for mode in ("sample-layer", "ancestral"):
        assert draw.main([str(run), "--per-class", "3", "--mode", mode]) == 0
        width, height = _is_png(run / f"samples_{mode}.png")
        assert height > width  # 10 rows of 3
        assert "class consistency" in capsys.readouterr().out
    # the mean mode is deterministic: one image per class, in one row, whatever --per-class says
    assert draw.main([str(run), "--per-class", "3", "--mode", "mean"]) == 0
    width, height = _is_png(run / "samples_mean.png")
    assert width > 3 * height
    out = capsys.readouterr().out
    assert "10 images" in out and "class consistency" in out
    assert draw.main([str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in _error_line(capsys)


def test_sigint_saves_and_resume_continues_to_the_same_metrics(tmp_path):
    """Ctrl-C in a real process: exit 130 with the resume command, then --resume completes
    the run with the metrics of an uninterrupted one (CPU, fixed seed)."""
    slow = ["--arch", "64-64-10", "--train-size", "1000", "--val-size", "200", "--epochs", "4",
            "--batch-size", "10", "--no-figures"]
    run = tmp_path / "run"
    # the run holds still in the middle of its second epoch (of four) until the signal is sent
    proc = paused_fit.start([*slow, "--out", str(run)], pause_at=0.35, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    paused_fit.wait_until_paused(proc)
    paused_fit.signal_and_resume(proc, signal.SIGINT)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 130, err
    assert f"--resume {run}" in err
    assert fit.main(["--resume", str(run)]) == 0
    assert fit.main([*slow, "--out", str(tmp_path / "straight")]) == 0
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (run, tmp_path / "straight")]
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_default_learning_rate_follows_the_units_unless_given(tmp_path):
    from pyro_dcim.training.config import DEFAULT_LR, TrainConfig

    def lr(*argv):
        return fit.config_from_args(fit.build_parser().parse_args(list(argv)))[0].lr

    assert lr() == DEFAULT_LR["01"] == TrainConfig().lr
    assert lr("--units", "pm1") == DEFAULT_LR["pm1"] == TrainConfig(units="pm1").lr == DEFAULT_LR["01"] / 4
    assert lr("--units", "pm1", "--lr", "0.01") == 0.01
    saved = tmp_path / "config.json"        # a stored run's rate is kept, whatever its units
    saved.write_text(json.dumps({"units": "pm1", "lr": 0.005}))
    assert lr("--config", str(saved)) == 0.005
    saved.write_text(json.dumps({"units": "pm1"}))
    assert lr("--config", str(saved)) == DEFAULT_LR["pm1"]


def test_objective_dependent_defaults_unless_given(tmp_path):
    from pyro_dcim.training.config import TrainConfig

    def cfg(*argv):
        return fit.config_from_args(fit.build_parser().parse_args(list(argv)))[0]

    def picked(c):
        return c.reverse_weight, c.reverse_reduction, c.untie

    assert picked(cfg()) == (10.0, "mean", False) == picked(TrainConfig())
    assert picked(cfg("--objective", "rws")) == (1.0, "sum", False) == picked(TrainConfig(objective="rws"))
    assert picked(cfg("--objective", "generative")) == (1.0, "sum", True) == picked(TrainConfig(objective="generative"))
    # given settings win, in either direction
    assert picked(cfg("--objective", "generative", "--no-untie", "--reverse-weight", "3")) == (3.0, "sum", False)
    assert picked(cfg("--objective", "bidirectional", "--untie", "--reverse-reduction", "sum")) == (10.0, "sum", True)
    assert picked(TrainConfig(objective="generative", untie=False, reverse_reduction="mean")) == (1.0, "mean", False)
    saved = tmp_path / "config.json"        # a stored run keeps its settings
    saved.write_text(json.dumps({"objective": "generative", "untie": False, "reverse_weight": 2.0}))
    assert picked(cfg("--config", str(saved))) == (2.0, "sum", False)


def test_each_choice_is_declared_once_and_drives_both_the_options_and_validation():
    from dataclasses import fields, replace

    from pyro_dcim.training.config import ConfigError, TrainConfig

    options = {a.dest: a for a in fit.build_parser()._actions}
    declared = [f for f in fields(TrainConfig) if f.metadata.get("choices") is not None]
    assert {f.name for f in declared} >= {"units", "objective", "approximation", "optimizer", "init", "amp"}
    for f in declared:
        assert options[f.name].choices == list(f.metadata["choices"]), f.name
        with pytest.raises(ConfigError, match=f"{f.name} must be one of"):
            replace(TrainConfig(), **{f.name: "no-such-choice"}).validate()


def test_fit_says_what_it_expects_after_its_first_steps_and_a_log_file_sees_it_at_once(tmp_path):
    """A run whose epochs take long says its expected time after the first steps, before the first epoch line,
    and the line reaches a redirected log file at once (line-buffered), not when the process exits."""
    import os
    import subprocess
    import sys
    import time

    log = tmp_path / "fit.log"
    # a few lines in all: block-buffered, they would reach the file only at exit
    argv = [sys.executable, "-m", "pyro_dcim.fit", *TINY, "--out", str(tmp_path / "run"), "--epochs", "3",
            "--train-size", "2000"]
    with log.open("w") as f:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # as a user's shell has it
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
        try:
            deadline = time.time() + 240
            while "expect about" not in log.read_text() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            seen_while_running = proc.poll() is None
            text = log.read_text()
        finally:
            proc.wait(timeout=600)
    # block-buffered, every line would arrive at once when the process ends, the last ("final: ...") with it
    assert seen_while_running and "final:" not in text, "the expected time reached the log only at exit"
    line = next(x for x in text.splitlines() if "expect about" in x)
    per_step, steps = re.match(r"([\d.e-]+) s per step over the first (\d+):", line).groups()
    assert float(per_step) > 0 and int(steps) == 5
    full = log.read_text().splitlines()
    assert full.index(line) < next(i for i, x in enumerate(full) if x.startswith("epoch"))


def test_expected_time_reads_in_the_unit_that_fits():
    from pyro_dcim.training.loop import expected_time

    assert expected_time(25.0, 5, 125, 1).startswith("5 s per step over the first 5: expect about 10 min for "
                                                     "the other 120 steps")
    assert "about 2.8 h" in expected_time(50.0, 5, 1005, 3) and "3 epoch(s) left" in expected_time(50.0, 5, 1005, 3)
    assert "about 40 s" in expected_time(5.0, 5, 45, 1)
