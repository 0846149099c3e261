"""Output folders checked before any work, a full disk, and the draw command's grid: each failure is
one line on stderr and exit status 2, with nothing lost or left half-written."""

import errno
import signal

import pytest
import torch

from pyro_dcim.cli import draw, fit
from pyro_dcim.cli.errors import report_interrupt
from pyro_dcim.cli.output import OutputError, prepare_output_dir, prepare_output_file

TINY = ["--arch", "32-10", "--train-size", "200", "--val-size", "100", "--epochs", "2", "--batch-size", "50",
        "--no-figures"]
UNWRITABLE = "/proc/pyro-dcim-test"   # no process may make a folder here, root included


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_prepare_output_dir_makes_missing_folders_and_names_what_blocks_them(tmp_path):
    deep = tmp_path / "a" / "b"
    assert prepare_output_dir(deep) == deep and deep.is_dir() and not list(deep.iterdir())   # the probe is gone
    a_file = tmp_path / "f.txt"
    a_file.write_text("mine")
    with pytest.raises(OutputError, match=r"--out .*f\.txt is a file, not a folder"):
        prepare_output_dir(a_file)
    with pytest.raises(OutputError, match=r"f\.txt is a file, not a folder"):
        prepare_output_dir(a_file / "below")
    with pytest.raises(OutputError, match=f"cannot write to output folder {UNWRITABLE}/x"):
        prepare_output_dir(f"{UNWRITABLE}/x")
    with pytest.raises(OutputError, match="is a folder; give the output file's name"):
        prepare_output_file(deep)
    assert prepare_output_file(tmp_path / "new" / "grid.png").parent.is_dir()
    assert a_file.read_text() == "mine"


def test_fit_out_naming_a_file_says_it_is_a_file(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"someone's checkpoint")
    assert fit.main([*TINY, "--out", str(ckpt)]) == 2
    err = _one_line(capsys)
    assert f"--out {ckpt} is a file, not a folder" in err and "File exists" not in err
    assert ckpt.read_bytes() == b"someone's checkpoint"


def _full_disk_from(monkeypatch, save_number: int, torch_style: bool) -> None:
    """``torch.save`` fails from its ``save_number``-th call as on a full disk: a plain OSError, or as torch
    itself reports it (a RuntimeError from its zip writer, with the OSError as its context)."""
    real, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] < save_number:
            return real(obj, f, *args, **kwargs)
        full = OSError(errno.ENOSPC, "No space left on device")
        if not torch_style:
            raise full
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("torch_style", [False, True], ids=["OSError", "torch-RuntimeError"])
def test_full_disk_at_the_first_save_leaves_nothing_behind_and_the_rerun_works(tmp_path, capsys, monkeypatch,
                                                                               torch_style):
    run = tmp_path / "run"
    _full_disk_from(monkeypatch, 1, torch_style)
    assert fit.main([*TINY, "--out", str(run)]) == 2
    err = _one_line(capsys)
    assert f"cannot write to run folder {run}: No space left on device; nothing was saved" in err
    assert not run.exists()                      # no config.json or empty metrics to block the same command
    monkeypatch.undo()
    assert fit.main([*TINY, "--out", str(run)]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_full_disk_in_a_users_folder_removes_only_the_runs_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    _full_disk_from(monkeypatch, 1, torch_style=True)
    assert fit.main([*TINY, "--out", str(folder)]) == 2
    _one_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_full_disk_after_an_epoch_keeps_the_last_checkpoint_and_resume_finishes(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _full_disk_from(monkeypatch, 3, torch_style=True)    # the start and epoch 1 are saved, epoch 2 is not
    assert fit.main([*TINY, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"resume with: python -m pyro_dcim.fit --resume {run}" in err
    assert not list(run.glob(".*.tmp"))          # no half-written checkpoint beside the whole one
    monkeypatch.undo()
    assert fit.main(["--resume", str(run)]) == 0
    assert [int(line.split('"epoch": ')[1].split(",")[0]) for line in (run / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2]


def test_a_folder_left_without_a_checkpoint_is_not_sent_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert fit.main([*TINY, "--out", str(run)]) == 2
    err = _one_line(capsys)
    assert "saved no checkpoint, so there is nothing to resume: pass --overwrite" in err and "--resume to" not in err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert fit.main([*TINY, "--arch", "16-10", "--epochs", "1", "--out", str(run)]) == 0
    return run


def test_draw_out_is_checked_before_anything_is_generated(run_dir, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("generated although --out cannot be written")

    monkeypatch.setattr(draw, "generate", never)
    assert draw.main([str(run_dir), "--out", f"{UNWRITABLE}/grid.png"]) == 2
    assert f"cannot write to folder of the output file {UNWRITABLE}" in _one_line(capsys)
    assert draw.main([str(run_dir), "--out", str(tmp_path)]) == 2
    assert "is a folder; give the output file's name" in _one_line(capsys)


@pytest.mark.parametrize("per_class", ["0", str(draw.MAX_PER_CLASS + 1), "100000"])
def test_draw_per_class_is_bounded(run_dir, capsys, per_class):
    assert draw.main([str(run_dir), "--per-class", per_class, "--mode", "sample-layer"]) == 2
    assert f"--per-class must be between 1 and {draw.MAX_PER_CLASS}, got {per_class}" in _one_line(capsys)


def test_draw_says_what_the_mean_mode_cannot_measure_and_writes_into_new_folders(run_dir, tmp_path, capsys):
    out = tmp_path / "new" / "mean.png"
    assert draw.main([str(run_dir), "--mode", "mean", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed and "none (the mean mode is deterministic: one image per class)" in printed
    assert "class consistency" in printed and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("per_class", [1, 3])
def test_grid_labels_each_row_or_image_with_its_intended_class(tmp_path, monkeypatch, per_class):
    from pyro_dcim import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    classes = torch.arange(4).repeat_interleave(per_class)
    images = torch.rand(len(classes), 1, 28, 28)
    plots.plot_sample_grid(images, classes, classes, torch.ones(len(classes)), tmp_path / "g.png")
    texts = [t.get_text() for t in drawn["fig"].axes[0].texts]
    assert [t for t in texts if t.startswith("class ")] == [f"class {c}" for c in range(4)]


def test_interrupt_message_can_start_on_a_fresh_line_and_carries_its_signal(capsys):
    assert report_interrupt("prog", "while sampling", signum=signal.SIGTERM, fresh_line=True) == 143
    assert capsys.readouterr().err == "\nprog: interrupted (SIGTERM) while sampling; nothing was saved\n"
    assert report_interrupt("prog") == 130
    assert capsys.readouterr().err == "prog: interrupted (SIGINT); nothing was saved\n"


def test_draw_reads_only_the_checkpoint_and_its_help_says_so_and_explains_class_consistency(run_dir, tmp_path,
                                                                                           capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    (copy / "config.json").write_text("{ not json")          # broken: draw does not need it
    assert draw.main([str(copy)]) == 0
    (copy / "config.json").unlink()                           # missing: the same
    assert draw.main([str(copy), "--mode", "ancestral", "--per-class", "2"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        draw.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "config.json is not read: the checkpoint holds the net" in text
    assert "class consistency: the fraction of generated images that the run's forward model classifies as the " \
           "class they were generated from" in text


def test_draw_temperature_flattens_the_sampled_layers_and_is_refused_elsewhere(run_dir, tmp_path, capsys):
    assert draw.main([str(run_dir), "--mode", "sample-layer", "--temperature", "1.5", "--per-class", "2",
                      "--out", str(tmp_path / "t.png")]) == 0
    assert "class consistency" in capsys.readouterr().out
    assert draw.main([str(run_dir), "--mode", "mean", "--temperature", "1.5", "--out", str(tmp_path / "m.png")]) == 2
    assert "temperature applies to the sample-layer mode" in _one_line(capsys)
    assert draw.main([str(run_dir), "--mode", "sample-layer", "--temperature", "0",
                      "--out", str(tmp_path / "z.png")]) == 2
    assert "temperature must be > 0" in _one_line(capsys)
