"""``python -m pyro_dcim.diagnose`` on a tiny trained run."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from _brute_force import single_thread

from pyro_dcim import DCIM, discriminative_loss
from pyro_dcim.cli.diagnose import main
from pyro_dcim.data import load_dataset
from pyro_dcim.training.checkpoint import model_state, save_checkpoint

pytestmark = pytest.mark.usefixtures(single_thread.__name__)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 784-6-5-10 net trained for 25 Adam steps on the bundled subset, saved as a run."""
    torch.manual_seed(0)
    net = DCIM.from_spec([6, 5, 10], input_shape=(1, 28, 28))
    x, y = load_dataset("mnist-subset", split="train")
    x, y = x[:1024], y[:1024]
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    first = None
    for step in range(25):
        idx = torch.arange(step * 64, (step + 1) * 64) % len(x)
        loss = discriminative_loss(net, x[idx], y[idx], report_reverse=False).total
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first                                   # it did train
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder / "checkpoint.pt", {"model": model_state(net)})
    (folder / "config.json").write_text(json.dumps({"dataset": "mnist-subset"}))
    return folder


def test_diagnose_prints_and_writes_the_summary(run_dir, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main([str(run_dir), "--images", "2", "--chains", "3", "--samples", "60", "--warmup", "20",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "per image" in text and "r_hat" in text and "mean-field" in text
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert len(summary) == 2 * (6 + 5) and summary.index[0] == "x1[0, 0]"
    assert {"mean", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(summary.columns)
    assert summary["mean"].between(0, 1).all()
    per_image = pd.read_csv(out / "per_image.csv", index_col=0)
    labels = load_dataset("mnist-subset", split="test")[1][:2]
    assert per_image["label"].tolist() == labels.tolist() and (per_image["seconds_per_ess"] > 0).all()
    layers = pd.read_csv(out / "layers.csv")
    assert layers["layer"].tolist() == ["x1", "x2"] and layers["units"].tolist() == [6, 5]
    assert (layers["max_abs_diff"] >= layers["mean_abs_diff"]).all() and (layers["max_abs_diff"] <= 1).all()
    assert (out / "trace_rank.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_run_folder_is_one_line_and_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope"), "--images", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    # the same through the module entry point
    proc = subprocess.run([sys.executable, "-m", "pyro_dcim.diagnose", str(tmp_path / "nope"), "--images", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_folder_without_checkpoint_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--images", "1"])
    assert exc.value.code == 2 and "no checkpoint" in capsys.readouterr().err


def test_the_runs_own_dataset_is_read_from_its_config(run_dir, tmp_path, capsys):
    """A run folder's config.json, as the training loop writes it (settings under "config"), names the
    dataset and data folder that diagnose loads: here four tiny IDX files with labels 7, 3, 9."""
    from dataclasses import asdict

    from pyro_dcim.training import TrainConfig
    from pyro_dcim.training.runs import write_config

    data = tmp_path / "idx"
    data.mkdir()
    labels = [7, 3, 9]
    images = torch.rand(3, 28, 28).mul(255).to(torch.uint8).numpy().tobytes()
    for split in ("train", "t10k"):
        (data / f"{split}-images-idx3-ubyte").write_bytes(
            b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images)
        (data / f"{split}-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(labels))
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    write_config(run, asdict(TrainConfig(dataset="mnist", data_dir=str(data))))
    out = tmp_path / "diag"
    assert main([str(run), "--images", "3", "--chains", "2", "--samples", "10", "--warmup", "5",
                 "--out", str(out)]) == 0
    assert pd.read_csv(out / "per_image.csv", index_col=0)["label"].tolist() == labels


def test_cuda_without_cuda_blames_the_device_not_the_checkpoint(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main([str(run_dir), "--images", "1", "--device", "cuda"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no CUDA device" in err and "checkpoint" not in err


def test_trace_rank_figure_shows_the_worst_r_hat_units(tmp_path):
    """The figure picks the units of the image with the largest R-hat (not units 0-2), skips units
    constant in every chain, and has one row (rank plot, running means) per unit."""
    from PIL import Image

    from pyro_dcim.inference import diagnostics

    g = torch.Generator().manual_seed(0)
    x1 = torch.bernoulli(torch.full((4, 200, 2, 5), 0.5), generator=g)   # (chain, draw, image, unit)
    x1[:, :, 0, 3] = torch.tensor([0.0, 0.0, 1.0, 1.0])[:, None]        # chains stuck apart: R-hat far from 1
    x1[:2, :, 0, 1] = torch.bernoulli(torch.full((2, 200), 0.9), generator=g)   # chains disagree less
    x1[:, :, 0, 0] = 1.0                                                 # constant: R-hat NaN
    idata = diagnostics.to_inference_data({"x1": x1})
    worst = diagnostics.worst_units(idata, image=0, units=3)
    r_hat = diagnostics.rhat(idata)["x1"][0]
    assert [(name, unit) for _, name, unit in worst][:2] == [("x1", 3), ("x1", 1)]
    assert [v for v, _, _ in worst] == sorted(r_hat[~r_hat.isnan()].tolist(), reverse=True)[:3]
    assert all(unit != 0 for _, _, unit in worst)
    heights = [Image.open(diagnostics.plot_trace_rank(idata, tmp_path / f"{n}.png", units=n)).size[1] for n in (1, 3)]
    assert heights[1] > 2 * heights[0]


def _exit_2_one_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("option, value, words", [
    ("--chains", "1", ["--chains must be at least 2", "R-hat compares chains"]),
    ("--samples", "1", ["--samples must be at least 4", "ArviZ"]),
    ("--images", "0", ["--images must be at least 1"]),
    ("--warmup", "-1", ["--warmup must be at least 0"]),
])
def test_counts_below_their_minimum_are_refused_with_the_reason(run_dir, capsys, monkeypatch, option, value, words):
    monkeypatch.setattr("pyro_dcim.cli.diagnose.gibbs_posterior", _never)
    err = _exit_2_one_line(capsys, [str(run_dir), option, value])
    assert all(w in err for w in words), err


def _never(*args, **kwargs):
    raise AssertionError("sampling started although the command should have stopped before it")


def test_a_bad_out_is_refused_before_sampling(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pyro_dcim.cli.diagnose.gibbs_posterior", _never)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    err = _exit_2_one_line(capsys, [str(run_dir), "--out", str(a_file)])
    assert "is a file, not a folder" in err and a_file.read_text() == "not a folder"
    err = _exit_2_one_line(capsys, [str(run_dir), "--out", str(a_file / "below")])
    assert f"{a_file} is a file, not a folder" in err
    err = _exit_2_one_line(capsys, [str(run_dir), "--out", "/proc/pyro-dcim-test/diag"])   # not writable, even by root
    assert "cannot write to output folder /proc/pyro-dcim-test/diag" in err


def test_out_defaults_to_a_folder_in_the_run_and_missing_folders_are_made(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--images", "1", "--chains", "2", "--samples", "8", "--warmup", "2"]) == 0
    assert all((run_dir / "diagnose" / name).is_file() for name in ("summary.csv", "per_image.csv", "layers.csv",
                                                                     "trace_rank.png"))
    deep = tmp_path / "not" / "yet" / "there"
    assert main([str(run_dir), "--images", "1", "--chains", "2", "--samples", "8", "--warmup", "2",
                 "--out", str(deep)]) == 0
    assert (deep / "summary.csv").is_file()
    assert f"wrote {deep}/summary.csv" in capsys.readouterr().out


def test_help_shows_the_defaults_and_missing_data_names_an_option_that_exists(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default 4)", "(default 500)", "(default 200)", "(default test)", "(default RUN_DIR/diagnose)"):
        assert default in text
    assert "--split {train,test} the split whose first N images" in text and "--download" in text
    err = _exit_2_one_line(capsys, [str(run_dir), "--dataset", "mnist", "--data-dir", str(tmp_path / "none")])
    assert "--download" in err          # the hint names an option diagnose has


_PAUSED = """
import os, signal, sys
from pyro_dcim.cli import diagnose
from pyro_dcim.inference.gibbs import DCIMGibbs
sample = DCIMGibbs.sample
def sample_then_pause(self, params):
    if self.sweeps == 3:    # mid-sampling: stop until the test has sent its signal
        os.kill(os.getpid(), signal.SIGSTOP)
    return sample(self, params)
DCIMGibbs.sample = sample_then_pause
sys.exit(diagnose.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_sampling_is_one_line_and_128_plus_n(run_dir, tmp_path, signum, code):
    """The child stops itself mid-sampling (no sleeps: the signal lands at a known point, however loaded
    the machine), receives the signal, and must say so in one line and write nothing."""
    import os
    import signal
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "diag"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED, str(run_dir), "--images", "1", "--chains", "2",
                             "--samples", "50", "--warmup", "5", "--out", str(out)], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"))
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"diagnose exited (status {status}) before it reached its pause"
    os.kill(proc.pid, signum)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    assert err.splitlines()[-1] == f"python -m pyro_dcim.diagnose: interrupted ({name}) while sampling; " \
                                   "nothing was written", err
    assert "Traceback" not in err and not any(out.iterdir())
