"""More bad input for the command lines (issue 8): each is one line on stderr and exit status 2."""

import gzip

from pyro_dcim import fit, sample

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
    assert sample.main([str(tmp_path / "nothing-here")]) == 2
    assert "no checkpoint" in _one_line(capsys)
