"""Datasets as tensors: IDX files (MNIST, Fashion-MNIST), the bundled MNIST subset, binarisation.

Images come back as ``float32`` tensors ``(N, 1, 28, 28)`` with intensities in
[0, 1] (read by the model as ``p(pixel = 1)``), labels as ``int64`` ``(N,)``.
Nothing is downloaded unless ``download=True`` is asked for.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["DataError", "read_idx", "find_idx_files", "load_dataset", "binarize", "DATASETS",
           "SUBSET_PATH", "IDX_NAMES"]

SUBSET_PATH = Path(__file__).with_name("assets") / "mnist_subset.npz"
DATASETS = ("mnist-subset", "mnist", "fashion-mnist")
#: where a dataset is looked for when no --data-dir is given (Debian's dataset-fashion-mnist package)
DEFAULT_DIRS = {"mnist": ["data/mnist", "data"],
                "fashion-mnist": ["/usr/share/datasets/fashion-mnist", "data/fashion-mnist"]}
IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(ValueError):
    """A dataset that is missing, unreadable or not what it should be."""


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), checking magic number, shape and length."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read ({e})") from None
    except (EOFError, ValueError, Exception) as e:  # zlib.error, truncated streams
        raise DataError(f"{path}: corrupted gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: wrong length {len(raw)} bytes for shape {shape} (expected {expected}); "
                        "the file is truncated or corrupted")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_idx_files(data_dir: os.PathLike | str, split: str, dataset: str = "mnist") -> tuple[Path, Path]:
    """Locate the images/labels IDX files of a split in ``data_dir``.

    Accepts the four standard files (``.gz`` or not, ``-idx`` or ``.idx`` names)
    directly in ``data_dir``, or torchvision's ``MNIST/raw`` / ``FashionMNIST/raw`` layout.
    """
    root = Path(data_dir).expanduser()
    folders = [root, root / "raw", root / _TORCHVISION_FOLDER.get(dataset, "MNIST") / "raw"]
    found = []
    for kind in ("images", "labels"):
        stem = IDX_NAMES[(split, kind)]
        names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
        hit = next((f / n for f in folders for n in names if (f / n).is_file()), None)
        if hit is None:
            raise DataError(
                f"{dataset} {split} {kind} not found in {root} (looked for {stem}[.gz] there, in raw/ and in "
                f"{_TORCHVISION_FOLDER.get(dataset, 'MNIST')}/raw/); pass --data-dir DIR holding the four IDX files, "
                f"or --download to fetch them with torchvision")
        found.append(hit)
    return found[0], found[1]


def _from_arrays(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{source}: images {images.shape} and labels {labels.shape} do not match")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels outside 0..9")
    x = torch.from_numpy(np.array(images, dtype=np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(np.array(labels, dtype=np.int64))


def _download(dataset: str, data_dir: Path, split: str) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[dataset]
    cls(str(data_dir), train=split == "train", download=True)


def load_dataset(name: str = "mnist-subset", split: str = "train", data_dir: Optional[os.PathLike | str] = None,
                 download: bool = False, binarize_mode: str = "none", seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` in [0, 1] and labels ``(N,)`` of one split.

    ``name``: ``"mnist-subset"`` (bundled: 10,000 training and 2,000 test digits of
    MNIST), ``"mnist"`` or ``"fashion-mnist"`` (IDX files in ``data_dir``; without
    one, the default folders in :data:`DEFAULT_DIRS`).  ``binarize_mode`` is applied
    once, see :func:`binarize`.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if name == "mnist-subset":
        if not SUBSET_PATH.is_file():
            raise DataError(f"the bundled subset {SUBSET_PATH} is missing; rebuild it with "
                            "python scripts/make_mnist_subset.py --data-dir DIR")
        with np.load(SUBSET_PATH) as z:
            x, y = _from_arrays(z[f"{split}_images"], z[f"{split}_labels"], str(SUBSET_PATH))
    elif name in ("mnist", "fashion-mnist"):
        candidates: Sequence[Path] = [Path(data_dir)] if data_dir else [Path(d) for d in DEFAULT_DIRS[name]]
        if download:
            target = candidates[0]
            target.mkdir(parents=True, exist_ok=True)
            _download(name, target, split)
        errors = []
        for folder in candidates:
            try:
                images_path, labels_path = find_idx_files(folder, split, name)
                break
            except DataError as e:
                errors.append(e)
        else:
            raise errors[0] if data_dir else DataError(
                f"{name} not found (searched {', '.join(str(c) for c in candidates)}); pass --data-dir DIR holding "
                "the four IDX files (.gz or not, or torchvision's MNIST/raw layout), or --download")
        x, y = _from_arrays(read_idx(images_path), read_idx(labels_path), str(images_path))
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return binarize(x, binarize_mode, seed), y


def binarize(images: torch.Tensor, mode: str = "none", seed: int = 0) -> torch.Tensor:
    """``"none"``: intensities as soft targets; ``"threshold"``: ``> 0.5``; ``"sample"``:
    one Bernoulli draw per pixel (fixed by ``seed``), the usual stochastic binarisation."""
    if mode == "none":
        return images
    if mode == "threshold":
        return (images > 0.5).to(images.dtype)
    if mode == "sample":
        return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))
    raise DataError(f"binarize must be 'none', 'threshold' or 'sample', got {mode!r}")
