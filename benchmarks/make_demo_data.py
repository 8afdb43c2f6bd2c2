"""Write the built-in ``demo`` dataset: a stratified Fashion-MNIST subset as gzipped IDX files.

    python benchmarks/make_demo_data.py [--source ../shared/data/fashion-mnist] [--train-per-class 450]

Takes the first N images of each class (per split) after a per-class shuffle with a fixed seed,
keeps them in their original order, and writes catalyst_deploy/demo_data/{train,t10k}-*-ubyte.gz
(gzip level 9, mtime 0, so the output is byte-for-byte reproducible). Run once; the files are
committed. Fashion-MNIST: Copyright 2017 Zalando SE, MIT license (see demo_data/NOTICE).
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

from catalyst_deploy.inputs.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "fashion-mnist"
DEMO_DIR = REPO / "catalyst_deploy" / "demo_data"
SEED = 0


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of each label, chosen by a seeded shuffle, returned in ascending order."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    """Write a uint8 array as a gzipped IDX file (big-endian header: magic, then each dimension)."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=9, mtime=0))


def write_split(source: Path, split: str, per_class: int) -> None:
    images = read_idx_file(source / f"{split}-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC)
    labels = read_idx_file(source / f"{split}-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC)
    keep = stratified_indices(labels, per_class, SEED)
    write_idx_gz(DEMO_DIR / f"{split}-images-idx3-ubyte.gz", images[keep], IDX_IMAGES_MAGIC)
    write_idx_gz(DEMO_DIR / f"{split}-labels-idx1-ubyte.gz", labels[keep], IDX_LABELS_MAGIC)
    print(f"{split}: {len(keep)} images ({per_class} per class)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the full Fashion-MNIST")
    parser.add_argument("--train-per-class", type=int, default=450)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    DEMO_DIR.mkdir(exist_ok=True)
    write_split(args.source, "train", args.train_per_class)
    write_split(args.source, "t10k", args.test_per_class)
    total = sum(p.stat().st_size for p in DEMO_DIR.glob("*.gz"))
    print(f"wrote {DEMO_DIR} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
