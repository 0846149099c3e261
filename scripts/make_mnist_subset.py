"""Build pyro_dcim/assets/mnist_subset.npz, the MNIST subset bundled for offline runs.

    python scripts/make_mnist_subset.py --data-dir ../shared/data/mnist

Takes the first 10,000 training and the first 2,000 test digits of the canonical
MNIST IDX files (uint8, unchanged) and stores them compressed.  MNIST is by Yann
LeCun, Corinna Cortes and Christopher J.C. Burges, made available under the
Creative Commons Attribution-Share Alike 3.0 licence; see pyro_dcim/assets/README.md.
"""

import argparse
from pathlib import Path

import numpy as np

from pyro_dcim.data import SUBSET_PATH, find_idx_files, read_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/mnist", help="folder with the four MNIST IDX files")
    parser.add_argument("--train", type=int, default=10_000, help="training digits to keep (the first N)")
    parser.add_argument("--test", type=int, default=2_000, help="test digits to keep (the first N)")
    parser.add_argument("--out", type=Path, default=SUBSET_PATH)
    args = parser.parse_args()
    arrays = {}
    for split, n in (("train", args.train), ("test", args.test)):
        images, labels = (read_idx(p) for p in find_idx_files(args.data_dir, split))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[:n], labels[:n]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    counts = np.bincount(arrays["train_labels"], minlength=10)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); training digits per class: {counts.tolist()}")


if __name__ == "__main__":
    main()
