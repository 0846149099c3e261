"""Datasets: the IDX reader, the bundled subset, the folder layouts and their errors."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dcim.data import DataError, binarize, find_idx_files, load_dataset, read_idx

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _write_idx(path, array, gz=False):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_bundled_subset():
    x, y = load_dataset("mnist-subset", "train")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's first training labels
    xt, yt = load_dataset("mnist-subset", "test")
    assert xt.shape == (2_000, 1, 28, 28) and set(yt.tolist()) == set(range(10))


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="needs ../shared/data/mnist")
def test_full_mnist_matches_bundled_subset():
    x, y = load_dataset("mnist", "test", data_dir=MNIST_DIR)
    assert x.shape == (10_000, 1, 28, 28) and y.bincount().tolist()[:3] == [980, 1135, 1032]
    xs, ys = load_dataset("mnist-subset", "test")
    assert torch.equal(xs, x[:2000]) and torch.equal(ys, y[:2000])


def test_layouts_and_missing_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels, gz=True)
    x, y = load_dataset("mnist", "test", data_dir=tmp_path)
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images))
    assert y.tolist() == labels.tolist()
    with pytest.raises(DataError, match=r"not found in .*--data-dir"):
        find_idx_files(tmp_path, "train")


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"\x00\x00\x07\x03" + b[4:], "magic"),
    (lambda b: b[:-10], "wrong length"),
    (lambda b: gzip.compress(b)[:-30], "gzip"),
    (lambda b: b"", "magic"),
])
def test_corrupted_idx_files_raise_data_error(tmp_path, damage, message):
    good = tmp_path / "good"
    _write_idx(good, np.zeros((2, 4, 4), dtype=np.uint8))
    bad = tmp_path / "bad"
    bad.write_bytes(damage(good.read_bytes()))
    assert read_idx(good).shape == (2, 4, 4)
    with pytest.raises(DataError, match=message):
        read_idx(bad)


def test_binarize_and_errors(tmp_path):
    x = torch.tensor([[0.2, 0.7, 0.5, 1.0]])
    assert binarize(x, "threshold").tolist() == [[0.0, 1.0, 0.0, 1.0]]
    s = binarize(x.expand(20000, 4), "sample", seed=1)
    assert set(s.unique().tolist()) <= {0.0, 1.0} and torch.allclose(s.mean(0), x[0], atol=0.02)
    with pytest.raises(DataError, match="binarize"):
        binarize(x, "round")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar")
    shutil.rmtree(tmp_path)
