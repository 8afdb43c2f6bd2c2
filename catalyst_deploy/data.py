"""Dataset specs: what ``--data`` accepts, turned into train/test datasets and loaders.

    splits = load_dataset("fashion-mnist:../shared/data/fashion-mnist")
    splits = load_dataset("cifar10:./cifar-10-batches-bin", image_size=(224, 224))
    splits = load_dataset("imagefolder:./imagenet")           # ./imagenet/train/CLASS/*, ./imagenet/val/CLASS/*
    splits = load_dataset("demo", channels=3)                  # Fashion-MNIST subset shipped in the package
    train_loader, test_loader = make_loaders(splits, batch_size=128)

IDX and CIFAR binaries are read with numpy (never unpickled) and kept in memory as uint8 tensors;
items are converted, resized, augmented and normalised with torch ops in ``__getitem__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalyst_deploy.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

DEMO_DATA_DIR = Path(__file__).parent / "demo_data"
IMAGEFOLDER_DEFAULT_SIZE = (224, 224)
IMAGEFOLDER_RESIZE_RATIO = 0.875  # test images: resize the short side to size/0.875, then center-crop
LIMIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data: classes, and the shape and statistics of one input."""

    name: str
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DataSplits:
    """Train and test datasets yielding ``(float image tensor (C, H, W), int label)``, and their info.

    ``val`` (None unless asked for) is held out of the training images, never trained on, and seen
    without augmentation: the split on which hyperparameters are chosen before the test split is read.
    """

    train: Dataset
    test: Dataset
    info: DatasetInfo
    val: Dataset | None = None


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation for in-memory images: random crop after zero padding, horizontal flip."""

    crop_padding: int = 0
    horizontal_flip: bool = False

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.crop_padding:
            pad, (height, width) = self.crop_padding, image.shape[-2:]
            top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            image = F.pad(image, (pad, pad, pad, pad))[..., top : top + height, left : left + width]
        if self.horizontal_flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


@dataclass(frozen=True)
class ImageArrays:
    """A dataset as read from disk: uint8 images (N, C, H, W) and int64 labels per split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class DatasetKind:
    """One row of :data:`DATASET_KINDS`: how a spec prefix is read, normalised and augmented."""

    usage: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation = Augmentation()
    read: Callable[[Path], ImageArrays] | None = None  # None: not an in-memory kind (imagefolder)
    default_path: Path | None = None


# ---- public API ---------------------------------------------------------------------------------


def load_dataset(
    spec: str,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: int = 0,
) -> DataSplits:
    """Read the dataset that ``spec`` names (see :func:`accepted_specs`); return train/test splits and info.

    ``image_size`` (height, width) resizes every image; ``channels`` converts (1 -> 3 repeats the
    gray channel, 3 -> 1 averages); ``val_size`` holds that many training images out as ``val``
    (a fixed pseudo-random choice, unaugmented); ``train_limit``/``test_limit`` then keep a fixed
    pseudo-random subset of that many items. Raises UsageError for an unknown spec, a missing or
    malformed dataset, or bad options.
    """
    name, kind, root = _parse_spec(spec)
    size = _check_image_size(image_size)
    _check_channels(channels)
    if kind.read is None:
        splits, unaugmented = _imagefolder_splits(root, kind, size, channels)
    else:
        splits, unaugmented = _in_memory_splits(name, kind, kind.read(root), size, channels)
    train, val = _hold_out(splits.train, unaugmented, val_size)
    return DataSplits(
        train=_limited(train, train_limit, "train_limit"),
        test=_limited(splits.test, test_limit, "test_limit"),
        info=splits.info,
        val=val,
    )


def make_loaders(splits: DataSplits, batch_size: int, workers: int = 0, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled by a generator seeded with ``seed``) and test loader (in order).

    Batches are not dropped; memory is pinned when CUDA is available. Raises UsageError when
    ``batch_size < 1`` or ``workers < 0``.
    """
    import torch
    from torch.utils.data import DataLoader

    if batch_size < 1 or workers < 0:
        raise UsageError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    common: dict[str, Any] = dict(
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        persistent_workers=workers > 0,
    )
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(splits.train, shuffle=True, generator=generator, **common)
    test = DataLoader(splits.test, shuffle=False, **common)
    return train, test


def spec_path(spec: str) -> Path | None:
    """The folder a dataset spec reads from (None for the bundled demo data), without reading it."""
    name, _, path = spec.partition(":")
    return Path(path).expanduser() if path and name.strip().lower() in DATASET_KINDS else None


def accepted_specs() -> str:
    """The spec forms load_dataset accepts, for error and help text."""
    return ", ".join(kind.usage for kind in DATASET_KINDS.values())


# ---- spec parsing and options -------------------------------------------------------------------


def _parse_spec(spec: str) -> tuple[str, DatasetKind, Path]:
    """``(kind name, kind, root folder)`` for a spec; raises UsageError for unknown kinds and missing paths."""
    name, _, path = spec.partition(":")
    name = name.strip().lower()
    kind = DATASET_KINDS.get(name)
    if kind is None:
        hint = did_you_mean(name, DATASET_KINDS)
        raise UsageError(f"unknown dataset spec {spec!r}{hint}: expected {accepted_specs()}")
    if not path:
        if kind.default_path is None:
            raise UsageError(f"dataset spec {spec!r} needs a path: {kind.usage}")
        return name, kind, kind.default_path
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root} (from {spec!r})")
    return name, kind, root


def _check_image_size(image_size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise UsageError(f"image size must be two positive integers (height, width), got {image_size!r}")
    return size


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels!r}")


def _limited(dataset: Dataset, limit: int | None, option: str) -> Dataset:
    """A fixed pseudo-random subset of ``limit`` items (in dataset order), or the dataset itself."""
    import torch
    from torch.utils.data import Subset

    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise UsageError(f"{option} must be >= 1, got {limit}")
    generator = torch.Generator().manual_seed(LIMIT_SEED)
    indices = torch.randperm(len(dataset), generator=generator)[:limit].sort().values
    return Subset(dataset, indices.tolist())


def _hold_out(train: Dataset, unaugmented: Dataset, size: int) -> tuple[Dataset, Dataset | None]:
    """(the training images minus ``size`` held-out ones, the held-out ones seen through ``unaugmented``,
    a view of the same images without augmentation). The choice is fixed: it depends on LIMIT_SEED only."""
    import torch
    from torch.utils.data import Subset

    if not size:
        return train, None
    if not 0 < size < len(train):
        raise UsageError(f"val_size must be between 1 and {len(train) - 1} (the training set has {len(train)} "
                         f"images), got {size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(LIMIT_SEED + 1))
    held, rest = order[:size].sort().values.tolist(), order[size:].sort().values.tolist()
    return Subset(train, rest), Subset(unaugmented, held)


# ---- channels and statistics --------------------------------------------------------------------


def convert_channels(image: torch.Tensor, channels: int | None) -> torch.Tensor:
    """(C, H, W) float image with ``channels`` channels: 1 -> 3 repeats, 3 -> 1 averages, None keeps."""
    have = image.shape[-3]
    if channels is None or have == channels:
        return image
    if have == 1:
        return image.expand(*image.shape[:-3], channels, *image.shape[-2:])
    if channels == 1:
        return image.mean(dim=-3, keepdim=True)
    raise UsageError(f"cannot convert {have}-channel images to {channels} channels")


class ConvertChannels:
    """Picklable transform wrapping :func:`convert_channels` (for DataLoader worker processes)."""

    def __init__(self, channels: int | None):
        self.channels = channels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return convert_channels(image, self.channels)


def _converted_stats(values: tuple[float, ...], channels: int | None) -> tuple[float, ...]:
    """Per-channel mean or std after :func:`convert_channels` (3 -> 1 averages the three)."""
    if channels is None or len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    return (round(sum(values) / len(values), 4),)


# ---- in-memory datasets (IDX, CIFAR binary) -----------------------------------------------------


class UInt8ImageDataset:
    """In-memory images as a uint8 (N, C, H, W) tensor, with int64 labels.

    Each item is converted, resized, augmented and normalised with torch ops (no PIL round trip)
    and returned as ``(float tensor (C, H, W), int label)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        info: DatasetInfo,
        augmentation: Augmentation | None = None,
    ):
        import torch

        self.images, self.labels, self.info = images, labels, info
        self.augmentation = augmentation
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import torch.nn.functional as F

        image = convert_channels(self.images[index].float().div_(255), self.info.channels)
        if tuple(image.shape[-2:]) != self.info.image_size:
            image = F.interpolate(image[None], size=self.info.image_size, mode="bilinear", antialias=True)[0]
        if self.augmentation is not None:
            image = self.augmentation(image)
        return (image - self._mean) / self._std, int(self.labels[index])


def _in_memory_splits(
    name: str, kind: DatasetKind, arrays: ImageArrays, image_size: tuple[int, int] | None, channels: int | None
) -> tuple[DataSplits, Dataset]:
    """Wrap arrays read from disk as train (augmented) and test datasets sharing one DatasetInfo, plus the
    training images without augmentation (what a validation split is cut from)."""
    native_channels, *native_size = arrays.train_images.shape[1:]
    info = DatasetInfo(
        name=name,
        num_classes=arrays.num_classes,
        channels=channels or native_channels,
        image_size=image_size or tuple(native_size),
        mean=_converted_stats(kind.mean, channels),
        std=_converted_stats(kind.std, channels),
    )
    # keep the crop padding the same fraction of the image when resizing (pad 4 at 32 -> 28 at 224)
    scale = info.image_size[0] / native_size[0]
    augmentation = Augmentation(round(kind.augmentation.crop_padding * scale), kind.augmentation.horizontal_flip)
    train = UInt8ImageDataset(arrays.train_images, arrays.train_labels, info=info, augmentation=augmentation)
    test = UInt8ImageDataset(arrays.test_images, arrays.test_labels, info=info)
    train_unaugmented = UInt8ImageDataset(arrays.train_images, arrays.train_labels, info=info)
    return DataSplits(train, test, info), train_unaugmented


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


# ---- image folders ------------------------------------------------------------------------------


def _imagefolder_splits(
    root: Path, kind: DatasetKind, image_size: tuple[int, int] | None, channels: int | None
) -> tuple[DataSplits, Dataset]:
    """torchvision ImageFolder over root/train and root/val (val uses train's class indices), plus root/train
    with the test transform (what a validation split is cut from)."""
    import torchvision.transforms as T

    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise UsageError(f"imagefolder:{root} needs {root}/train/CLASS/*.jpg and {root}/val/CLASS/*.jpg")
    size = image_size or IMAGEFOLDER_DEFAULT_SIZE
    mean, std = _converted_stats(kind.mean, channels), _converted_stats(kind.std, channels)
    info = DatasetInfo("imagefolder", 0, channels or 3, size, mean, std)  # num_classes: from train/ below
    finish = [T.ToTensor(), ConvertChannels(channels), T.Normalize(info.mean, info.std)]
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *finish])
    test_tf = T.Compose([T.Resize(round(min(size) / IMAGEFOLDER_RESIZE_RATIO)), T.CenterCrop(size), *finish])
    train = _image_folder(root / "train", train_tf)
    test = _image_folder(root / "val", test_tf, classes=train.classes)
    train_unaugmented = _image_folder(root / "train", test_tf)
    return DataSplits(train, test, dataclasses.replace(info, num_classes=len(train.classes))), train_unaugmented


def _image_folder(folder: Path, transform, classes: list[str] | None = None):
    """A torchvision ImageFolder; with ``classes``, relabelled to their indices (val may lack some, not add any)."""
    from torchvision.datasets import ImageFolder

    try:
        dataset = ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"{folder}: {err}") from None
    if classes is None or dataset.classes == classes:
        return dataset
    extra = sorted(set(dataset.classes) - set(classes))
    if extra:
        raise UsageError(f"{folder} has class folders that train/ lacks: {', '.join(extra[:5])}")
    index_of = {name: i for i, name in enumerate(classes)}
    dataset.samples = [(path, index_of[dataset.classes[label]]) for path, label in dataset.samples]
    dataset.imgs, dataset.targets = dataset.samples, [label for _, label in dataset.samples]
    dataset.classes, dataset.class_to_idx = list(classes), index_of
    return dataset


# ---- the table of dataset kinds -----------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

DATASET_KINDS: dict[str, DatasetKind] = {
    "imagefolder": DatasetKind("imagefolder:PATH (PATH/train/CLASS/*, PATH/val/CLASS/*)", IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": DatasetKind(
        "cifar10:PATH", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), Augmentation(4, True), read_cifar10
    ),
    "cifar100": DatasetKind(
        "cifar100:PATH", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), Augmentation(4, True), read_cifar100
    ),
    "fashion-mnist": DatasetKind(
        "fashion-mnist:PATH", FASHION_MNIST_MEAN, FASHION_MNIST_STD, Augmentation(2, True), read_idx_dataset
    ),
    # no flips for digits
    "mnist": DatasetKind("mnist:PATH", (0.1307,), (0.3081,), Augmentation(2, False), read_idx_dataset),
    "demo": DatasetKind(
        "demo (a Fashion-MNIST subset shipped with the package)",
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        Augmentation(2, True),
        read_idx_dataset,
        default_path=DEMO_DATA_DIR,
    ),
}
