"""The dataset classes `data.load_dataset` builds (the binary readers are in `readers`) (what `data.load_dataset` builds on).

IDX (MNIST, Fashion-MNIST) and CIFAR binaries are read with numpy (never unpickled) and kept in memory as
uint8 tensors; items are converted, resized, augmented and normalised with torch ops in `__getitem__`.
Image folders go through torchvision's ImageFolder; an unreadable image is reported with its path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catalyst_deploy.errors import UsageError

if TYPE_CHECKING:
    import torch


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


# ---- image folders ------------------------------------------------------------------------------


def image_folder(folder: Path, transform, classes: list[str] | None = None):
    """A torchvision ImageFolder; with ``classes``, relabelled to their indices (val may lack some, not add any)."""
    from torchvision.datasets import ImageFolder

    try:
        dataset = ImageFolder(str(folder), transform=transform, loader=_load_image)
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


def _load_image(path: str):
    """An RGB PIL image; an unreadable file is a UsageError naming it (not a traceback mid-training)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise UsageError(f"cannot read image {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
                         "(remove or replace the file)") from None
