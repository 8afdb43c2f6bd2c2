"""Binary dataset formats read with numpy (never unpickled): the IDX files of MNIST / Fashion-MNIST and
the CIFAR-10/100 binary versions. Each reader returns `datasets.ImageArrays` (uint8 tensors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catalyst_deploy.inputs.datasets import ImageArrays
from catalyst_deploy.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
IDX_FILE_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
IDX_SUBFOLDERS = (".", "raw", "FashionMNIST/raw", "MNIST/raw")  # as downloaded, or torchvision's layout


def read_idx_dataset(root: Path) -> ImageArrays:
    """The four (optionally gzipped) IDX files of MNIST / Fashion-MNIST in ``root``, as uint8 tensors.

    Raises UsageError when a file is missing, has the wrong magic number or size, or the image
    and label counts differ.
    """
    import torch

    split_arrays = []
    for split in ("train", "test"):
        images = read_idx_file(_find_idx_file(root, split, "images"), IDX_IMAGES_MAGIC)
        labels = read_idx_file(_find_idx_file(root, split, "labels"), IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise UsageError(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
        split_arrays += [torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype("int64"))]
    arrays = ImageArrays(*split_arrays, num_classes=10)
    _check_labels(root, arrays)
    return arrays


def _find_idx_file(root: Path, split: str, what: str) -> Path:
    stem = IDX_FILE_STEMS[(split, what)]
    dotted = stem.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
    for folder in IDX_SUBFOLDERS:
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (root / folder / name).is_file():
                return root / folder / name
    raise UsageError(f"{root} has no {stem}[.gz]: expected the four IDX files train-/t10k-images/labels")


def read_idx_file(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of its declared shape.

    Raises UsageError when the magic number is not ``magic`` (2051 images, 2049 labels) or the
    data size does not match the header.
    """
    import gzip
    import zlib

    import numpy as np

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise UsageError(f"{path}: broken gzip file ({err})") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise UsageError(f"{path}: not an IDX {_idx_kind(magic)} file (magic number {found}, expected {magic})")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header_size + int(np.prod(shape)):
        raise UsageError(f"{path}: header says shape {shape} but the file holds {len(raw) - header_size} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _idx_kind(magic: int) -> str:
    return {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}.get(magic, str(magic))


def _check_labels(root: Path, arrays: ImageArrays) -> None:
    """Raise UsageError when a label is outside 0 .. num_classes - 1."""
    for labels in (arrays.train_labels, arrays.test_labels):
        if len(labels) and int(labels.max()) >= arrays.num_classes:
            raise UsageError(f"{root}: label {int(labels.max())} out of range for {arrays.num_classes} classes")


# ---- CIFAR binary -------------------------------------------------------------------------------

CIFAR_IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where the binary version of a CIFAR dataset keeps its records and how they are laid out."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int  # label bytes before each image
    label_index: int  # which of them is the label we use
    num_classes: int


CIFAR10_LAYOUT = CifarLayout(
    "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, 0, 10
)
CIFAR100_LAYOUT = CifarLayout("cifar-100-binary", ("train.bin",), ("test.bin",), 2, 1, 100)  # coarse, fine


def read_cifar10(root: Path) -> ImageArrays:
    """CIFAR-10 binary version from ``root`` (cifar-10-batches-bin or its parent)."""
    return read_cifar_binary(root, CIFAR10_LAYOUT)


def read_cifar100(root: Path) -> ImageArrays:
    """CIFAR-100 binary version (fine labels) from ``root`` (cifar-100-binary or its parent)."""
    return read_cifar_binary(root, CIFAR100_LAYOUT)


def read_cifar_binary(root: Path, layout: CifarLayout) -> ImageArrays:
    """Read a CIFAR binary dataset with numpy; raises UsageError on a missing file or a bad size."""
    folder = _cifar_folder(root, layout)
    train_images, train_labels = _read_cifar_records(folder, layout.train_files, layout)
    test_images, test_labels = _read_cifar_records(folder, layout.test_files, layout)
    arrays = ImageArrays(train_images, train_labels, test_images, test_labels, layout.num_classes)
    _check_labels(folder, arrays)
    return arrays


def _cifar_folder(root: Path, layout: CifarLayout) -> Path:
    for folder in (root, root / layout.folder):
        if all((folder / name).is_file() for name in layout.train_files + layout.test_files):
            return folder
    files = ", ".join(layout.train_files + layout.test_files)
    raise UsageError(f"{root} is not the binary CIFAR dataset: expected {layout.folder}/ with {files}")


def _read_cifar_records(folder: Path, names: tuple[str, ...], layout: CifarLayout) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    import torch

    record_size = layout.label_bytes + CIFAR_IMAGE_BYTES
    records = []
    for name in names:
        data = np.fromfile(folder / name, dtype=np.uint8)
        if data.size == 0 or data.size % record_size:
            raise UsageError(f"{folder / name}: {data.size} bytes is not a whole number of {record_size}-byte records")
        records.append(data.reshape(-1, record_size))
    table = np.concatenate(records)
    images = np.ascontiguousarray(table[:, layout.label_bytes :]).reshape(-1, 3, 32, 32)
    labels = table[:, layout.label_index].astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)
