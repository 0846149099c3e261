"""More bad input for the command lines: each is one line on stderr and exit status 2."""

import gzip
import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pyro_dcim import cli
from pyro_dcim.cli import draw, fit

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--arch", "32-10", "--train-size", "200", "--val-size", "100", "--epochs", "1", "--batch-size", "50",
        "--no-figures"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_resume_with_another_architecture(tmp_path, capsys):
    run = tmp_path / "run"
    assert fit.main([*TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert fit.main(["--resume", str(run), "--arch", "16-10"]) == 2
    err = _one_line(capsys)
    assert "[32, 10]" in err and "[16, 10]" in err


def test_image_size_that_does_not_fit_the_architecture(tmp_path, capsys):
    assert fit.main([*TINY, "--arch", "(20,1,4,0) (20,1,4,0) 10", "--out", str(tmp_path / "r")]) == 2
    assert "too small for this architecture" in _one_line(capsys)


def test_truncated_idx_file_through_the_cli(tmp_path, capsys):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    headers = [b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
               b"\x00\x00\x08\x01" + (3).to_bytes(4, "big")]
    for name in names:
        header = headers[0] if "images" in name else headers[1]
        body = bytes(3 * 28 * 28) if "images" in name else bytes([1, 2, 3])
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(header + body[:-5]))  # 5 bytes short
    assert fit.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "wrong length" in _one_line(capsys)


def test_sample_of_a_missing_run(tmp_path, capsys):
    assert draw.main([str(tmp_path / "nothing-here")]) == 2
    assert "no checkpoint" in _one_line(capsys)


def test_a_sampled_layer_outside_the_net_is_refused_before_the_run_folder(tmp_path, capsys):
    run = tmp_path / "r"
    assert fit.main([*TINY, "--objective", "sampled-layer", "--sample-layer", "7", "--out", str(run)]) == 2
    assert "the sampled layer must be a hidden layer 1..1, got 7" in _one_line(capsys)
    assert not run.exists()  # so the same command, corrected, can use the folder
    assert fit.main([*TINY, "--objective", "sampled-layer", "--sample-layer", "1", "--out", str(run)]) == 0


def test_a_wrongly_typed_config_value(tmp_path, capsys):
    import json

    config = tmp_path / "config.json"
    for value, expected in [({"lr": "fast"}, "setting lr must be a number or null, got 'fast'"),
                            ({"eval_batch_size": 2.5}, "setting eval_batch_size must be an integer, got 2.5"),
                            ({"compile": "no"}, "setting compile must be true or false, got 'no'")]:
        config.write_text(json.dumps({"config": value}))
        assert fit.main([*TINY, "--config", str(config), "--out", str(tmp_path / "r")]) == 2
        assert expected in _one_line(capsys)
    config.write_text(json.dumps({"config": {"lr": 1, "val_size": None}}))   # an int is a number
    assert fit.config_from_args(fit.build_parser().parse_args(["--config", str(config)]))[0].lr == 1


def test_ctrl_c_outside_the_loop_is_one_line_and_a_started_run_can_resume(tmp_path, capsys, monkeypatch):
    from pyro_dcim.training import loop as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "train", interrupted)           # while loading the data
    assert fit.main([*TINY, "--out", str(tmp_path / "a")]) == 130
    assert "interrupted (SIGINT) outside the training loop; nothing was saved" in _one_line(capsys)
    monkeypatch.undo()
    run = tmp_path / "b"
    monkeypatch.setattr(train_module.distributed, "wrap", interrupted)   # after the folder is written
    assert fit.main([*TINY, "--out", str(run)]) == 130
    assert f"resume with: python -m pyro_dcim.fit --resume {run}" in _one_line(capsys)
    monkeypatch.undo()
    assert fit.main(["--resume", str(run)]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_zero_epochs_says_what_it_does(tmp_path, capsys):
    run = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # e.g. an empty legend on the learning-curve figure
        args = [a for a in TINY if a != "--no-figures"]      # the figures too
        assert fit.main([*args, "--epochs", "0", "--out", str(run)]) == 0
    assert "--epochs 0: no epoch left to train (0 done); evaluating and saving the initialised network" \
        in capsys.readouterr().out
    assert (run / "checkpoint.pt").is_file()


def test_ctrl_c_while_a_command_imports_is_one_line_and_exit_130(monkeypatch, capsys):
    """``python -m pyro_dcim.<command>`` starts through ``cli.launch``, which holds the Ctrl-C handling
    before torch loads; here the import itself is interrupted."""
    def interrupted(name, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as e:
        cli.launch("fit")
    assert e.value.code == 130
    assert _one_line(capsys) == "python -m pyro_dcim.fit: interrupted (SIGINT) while starting; nothing was saved\n"


@pytest.mark.parametrize("command", ["fit", "sample", "draw", "diagnose", "likelihood"])
def test_every_command_runs_as_a_module(command):
    done = subprocess.run([sys.executable, "-m", f"pyro_dcim.{command}", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert f"python -m pyro_dcim.{command}" in done.stdout
