"""Dataset specs: what ``--data`` accepts, turned into train / validation / test datasets and loaders.

    splits = load_dataset("fashion-mnist:../shared/data/fashion-mnist", val_size=5000)
    splits = load_dataset("cifar10:./cifar-10-batches-bin", image_size=(224, 224))
    splits = load_dataset("imagefolder:./imagenet")           # ./imagenet/train/CLASS/*, ./imagenet/val/CLASS/*
    splits = load_dataset("demo", channels=3)                  # Fashion-MNIST subset shipped in the package
    train_loader, test_loader = make_loaders(splits, batch_size=128)

The readers live in `datasets`; the training loader shuffles as a function of (seed, epoch) only, so a
run continued from a checkpoint sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalyst_deploy.inputs.datasets import (Augmentation, ConvertChannels, DatasetInfo, ImageArrays, UInt8ImageDataset,
                                      _converted_stats, image_folder)
from catalyst_deploy.inputs.readers import read_cifar10, read_cifar100, read_idx_dataset
from catalyst_deploy.inputs.sampling import EpochSampler, SampleDraws
from catalyst_deploy.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset

DEMO_DATA_DIR = Path(__file__).parents[1] / "demo_data"  # package data at the package root
IMAGEFOLDER_DEFAULT_SIZE = (224, 224)
IMAGEFOLDER_RESIZE_RATIO = 0.875  # test images: resize the short side to size/0.875, then center-crop
LIMIT_SEED = 0


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


def make_loaders(splits: DataSplits, batch_size: int, workers: int = 0, seed: int = 0,
                 eval_split: str = "test", rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled by `EpochSampler`, augmented by `SampleDraws`: functions of `seed`, the epoch and
    the item) and the loader of `eval_split` ("test" or "val"), in order.

    With `world_size` > 1 each rank gets its own share of every epoch (the batch size is per rank).
    Batches are not dropped; memory is pinned when CUDA is available. Raises UsageError when
    ``batch_size < 1`` or ``workers < 0``.
    """
    import torch
    from torch.utils.data import DataLoader

    if batch_size < 1 or workers < 0:
        raise UsageError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    evaluated = splits.val if eval_split == "val" else splits.test
    if evaluated is None:
        raise UsageError("no validation split: set val_size")
    common: dict[str, Any] = dict(batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                  drop_last=False, persistent_workers=workers > 0)
    # every item's augmentation is drawn from (seed, epoch, item) (`sampling`): the same on any rank or worker;
    # the loaders' own generators keep their base seeds off the global RNG as well
    train = DataLoader(SampleDraws(splits.train, seed), sampler=EpochSampler(len(splits.train), seed, rank,
                                                                              world_size),
                       generator=torch.Generator().manual_seed(seed), **common)
    return train, DataLoader(evaluated, shuffle=False, generator=torch.Generator().manual_seed(seed), **common)


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
    train = image_folder(root / "train", train_tf)
    if len(train.classes) < 2:  # one class: every prediction right, and nothing learned or measured
        raise UsageError(f"imagefolder:{root} has {len(train.classes)} class folder(s) in train/ "
                         f"({', '.join(train.classes)}): a classifier needs at least 2, one folder per class")
    test = image_folder(root / "val", test_tf, classes=train.classes)
    train_unaugmented = image_folder(root / "train", test_tf)
    return DataSplits(train, test, dataclasses.replace(info, num_classes=len(train.classes))), train_unaugmented

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
