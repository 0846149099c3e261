"""Opening someone else's run folder runs none of its code (issue 26).

Every checkpoint, AIS and BDMC resume file is read with ``weights_only=True``; a crafted file is one
line and exit status 2 from every command (a ``CheckpointError`` from the API), and its payload, a
harmless ``open(marker, "w")``, never runs.  Files of older versions (numpy RNG states, result
dataclasses) convert once, deliberately, with ``python -m pyro_dcim.convert``.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dcim import DCIM, load_model
from pyro_dcim.classifier import PlainCNN, load_classifier, save_classifier
from pyro_dcim.cli import convert, diagnose, draw, fit, likelihood
from pyro_dcim.inference import AISResult, ais_log_likelihood, bdmc
from pyro_dcim.inference.energy import ChainEnergy
from pyro_dcim.safe_load import CheckpointError, UnsafeFileError
from pyro_dcim.training.checkpoint import load_checkpoint, model_state
from pyro_dcim.training.rng import set_rng_state

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "32-10", "--train-size", "200", "--val-size", "100", "--epochs", "1", "--batch-size", "50",
        "--no-figures"]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file (and nothing else)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path: Path, marker: Path, **plain) -> Path:
    """A file whose ``"model"`` looks like a pyro_dcim model state but also holds the payload."""
    state = model_state(DCIM.from_spec([32, 10], input_shape=(1, 28, 28)))
    torch.save({"model": dict(state, note=_Payload(marker)), **plain}, path)
    return path


def _exit_status(command, argv: list[str]) -> int:
    """``command.main(argv)``'s status, whether it returns it or exits with it (as argparse errors do)."""
    try:
        return command.main(argv)
    except SystemExit as e:
        return e.code


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("safe") / "run"
    assert fit.main([*TINY, "--out", str(run)]) == 0
    return run


@pytest.fixture
def crafted_run(tiny_run, tmp_path) -> tuple[Path, Path]:
    """A copy of a real run folder (config.json and all) whose checkpoint.pt is the crafted file."""
    run = tmp_path / "theirs"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "PWNED"
    _crafted(run / "checkpoint.pt", marker)
    return run, marker


def test_a_fresh_checkpoint_is_plain_data(tiny_run):
    ckpt = torch.load(tiny_run / "checkpoint.pt", weights_only=True)   # every piece the trainer stores
    assert {"model", "optimizer", "rng", "position", "partial", "history", "config"} <= ckpt.keys()
    assert isinstance(ckpt["rng"]["numpy"][1], torch.Tensor)


def test_load_model_refuses_a_crafted_checkpoint_and_runs_nothing(crafted_run):
    run, marker = crafted_run
    with pytest.raises(UnsafeFileError, match=r"builtins\.open|io\.open") as e:
        load_model(run)
    assert isinstance(e.value, CheckpointError) and "python -m pyro_dcim.convert" in str(e.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("command, argv", [
    (draw, ["{run}", "--out", "{tmp}/grid.png"]),
    (diagnose, ["{run}", "--images", "1", "--samples", "5", "--warmup", "1"]),
    (likelihood, ["{run}", "--images", "1", "--steps", "2", "--chains", "2", "--no-progress"]),
    (fit, ["--resume", "{run}"]),
])
def test_every_command_gives_one_line_and_exit_2_and_runs_nothing(crafted_run, tmp_path, capsys, command, argv):
    run, marker = crafted_run
    capsys.readouterr()
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert _exit_status(command, argv) == 2
    assert "python -m pyro_dcim.convert" in _one_line(capsys)
    assert not marker.exists()


def test_a_foreign_plain_checkpoint_is_refused_by_resume(tiny_run, tmp_path, capsys):
    run = tmp_path / "foreign"
    shutil.copytree(tiny_run, run)
    torch.save({"model": load_checkpoint(tiny_run)["model"]}, run / "checkpoint.pt")   # no optimiser, no RNG
    capsys.readouterr()
    assert fit.main(["--resume", str(run), "--epochs", "2"]) == 2
    assert "not a resumable pyro_dcim checkpoint" in _one_line(capsys)


def _small_net() -> DCIM:
    torch.manual_seed(0)
    return DCIM.from_spec([4, 3], input_shape=(5,))


def test_ais_and_bdmc_resume_files_are_loaded_safely(tmp_path):
    net = _small_net()
    x0, y = torch.bernoulli(torch.full((2, 5), 0.5)), torch.tensor([0, 1])
    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafeFileError, match="AIS checkpoint"):
        ais_log_likelihood(net, x0, y, 4, 2, checkpoint=_crafted(tmp_path / "ais.pt", marker, key={}, parts=[]))
    _crafted(tmp_path / "bdmc.forward-done", marker)
    with pytest.raises(UnsafeFileError, match="BDMC forward-done"):
        bdmc(net, 2, 4, 2, checkpoint=tmp_path / "bdmc")
    assert not marker.exists()
    torch.save({"x0": 1}, tmp_path / "bdmc.forward-done")   # plain, but not a BDMC file
    with pytest.raises(CheckpointError, match="not a BDMC forward-done file"):
        bdmc(net, 2, 4, 2, checkpoint=tmp_path / "bdmc")


def test_a_crafted_classifier_file_runs_nothing(tiny_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    judge = tmp_path / "judge.pt"
    torch.save({"state_dict": _Payload(marker), "test_accuracy": 0.99}, judge)
    with pytest.raises(UnsafeFileError, match="classifier") as e:
        load_classifier(judge)
    assert "convert" not in str(e.value)     # classifiers never held objects: nothing to convert
    capsys.readouterr()
    assert draw.main([str(tiny_run), "--out", str(tmp_path / "grid.png"), "--classifier", str(judge)]) == 2
    _one_line(capsys)
    assert not marker.exists()
    save_classifier(PlainCNN(), judge, 0.5)  # what save_classifier writes loads
    assert load_classifier(judge)[1] == 0.5


def _old_style(path: Path) -> tuple[bytes, tuple]:
    """Rewrite a checkpoint as earlier versions stored it (numpy's RNG state with its array)."""
    ckpt = torch.load(path, weights_only=True)
    name, key, *rest = ckpt["rng"]["numpy"]
    ckpt["rng"]["numpy"] = (name, key.numpy().astype(np.uint32), *rest)
    torch.save(ckpt, path)
    return path.read_bytes(), ckpt["rng"]["numpy"]


def test_convert_makes_an_old_checkpoint_load_safely_and_resume(tiny_run, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    original, numpy_state = _old_style(run / "checkpoint.pt")
    with pytest.raises(UnsafeFileError, match="numpy"):
        load_model(run)
    capsys.readouterr()
    assert draw.main([str(run), "--out", str(tmp_path / "grid.png")]) == 2
    assert f"python -m pyro_dcim.convert {run / 'checkpoint.pt'}" in _one_line(capsys)

    assert convert.main([str(run)]) == 0
    out, err = capsys.readouterr()
    assert "trusting this file" in err and "converted" in out
    assert (run / "checkpoint.pt.unsafe-backup").read_bytes() == original       # kept as it was
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    load_model(run)
    np.random.set_state(numpy_state)         # the converted numpy state draws what the original does
    expected = np.random.rand(4)
    np.random.seed(1)
    set_rng_state(ckpt["rng"], torch.Generator())
    assert np.array_equal(np.random.rand(4), expected)
    assert fit.main(["--resume", str(run), "--epochs", "2"]) == 0
    capsys.readouterr()
    assert convert.main([str(run)]) == 0     # a second conversion leaves the plain file as it is
    assert "left as it is" in capsys.readouterr().out


def test_convert_an_old_bdmc_forward_done_file_and_resume_to_the_same_result(tmp_path, monkeypatch, capsys):
    net = _small_net()
    kw = dict(num_images=2, num_steps=6, num_chains=2, seed=4)
    torch.manual_seed(0)
    whole = bdmc(net, **kw)
    prefix = tmp_path / "bdmc"
    real_sweep, calls = ChainEnergy.sweep, []

    def failing_sweep(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 7:                 # early in the reverse run: the forward one is done
            raise KeyboardInterrupt
        return real_sweep(self, *args, **kwargs)

    monkeypatch.setattr(ChainEnergy, "sweep", failing_sweep)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        bdmc(net, **kw, checkpoint=prefix, checkpoint_every=2)
    monkeypatch.setattr(ChainEnergy, "sweep", real_sweep)
    done = Path(f"{prefix}.forward-done")
    saved = torch.load(done, weights_only=True)
    torch.save(dict(saved, result=AISResult(**saved["result"])), done)     # as earlier versions wrote it
    with pytest.raises(UnsafeFileError, match="AISResult"):
        bdmc(net, **kw, checkpoint=prefix)
    assert convert.main([str(done)]) == 0
    assert "BDMC forward-done file converted" in capsys.readouterr().out
    torch.manual_seed(99)                    # the checkpoints' random states win
    resumed = bdmc(net, **kw, checkpoint=prefix, checkpoint_every=2)
    assert torch.equal(resumed.lower, whole.lower) and torch.equal(resumed.upper, whole.upper)


def test_convert_trusts_the_file_so_a_crafted_one_runs_there_and_is_refused(tmp_path, capsys):
    """The one trusting path: documented, warned about, and still nothing is written."""
    marker = tmp_path / "PWNED"
    path = _crafted(tmp_path / "checkpoint.pt", marker)
    before = path.read_bytes()
    assert convert.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "trusting this file" in err and "cannot be converted" in err
    assert marker.exists()                   # convert ran it: only ever convert files you trust
    assert path.read_bytes() == before and not (tmp_path / "checkpoint.pt.unsafe-backup").exists()


def test_convert_bad_input(tmp_path, capsys):
    assert convert.main([str(tmp_path / "nothing")]) == 2
    assert "no file at" in _one_line(capsys)
    (tmp_path / "x.pt").write_bytes(b"garbage")
    assert convert.main([str(tmp_path / "x.pt")]) == 2
    assert "unreadable" in _one_line(capsys)


def test_convert_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "pyro_dcim.convert", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "python -m pyro_dcim.convert" in done.stdout and "weights_only" in done.stdout
