"""This package's own small models, for the CPU benchmark, the demo and fast tests.

Use them by spec (``zoo:small_resnet``, ``zoo:tiny_cnn``, ``zoo:tiny_vit``) or call the factories directly. Every
class is a plain ``nn.Module`` defined at module level, so ``torch.save(model)`` pickles it and
:func:`catalyst_deploy.inputs.models.load_model` reads it back with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["ConvBNReLU", "ResidualBlock", "SmallResNet", "TinyCNN", "fashion_small_resnet", "small_resnet", "tiny_cnn",
           "tiny_vit"]

PRETRAINED_DIR = Path(__file__).parents[1] / "pretrained"  # package data at the package root


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias) + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """ResNet BasicBlock: conv-bn-relu-conv-bn plus a shortcut, then ReLU.

    The shortcut is the identity, or a 1x1 conv + BN when the stride or the width changes. The
    residual add couples the block's output channels to its input's, which is what a pruning
    dependency graph has to respect.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv + three stages of residual blocks (strides 1, 2, 2) + global average pool + Linear.

    The stem has stride 2 by default: on 28x28 inputs the stages then run at 14, 7 and 4 pixels,
    which keeps an epoch of Fashion-MNIST near a minute on 2 CPU cores (a stride-1 stem is about
    3x the compute for a point or so of accuracy). Works on any input size of at least 2x2.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        stem_stride: int = 2,
    ):
        super().__init__()
        if len(widths) != 3 or blocks_per_stage < 1:
            raise ValueError(f"need 3 stage widths and blocks_per_stage >= 1, got {widths}, {blocks_per_stage}")
        self.stem = ConvBNReLU(in_channels, widths[0], stride=stem_stride)
        stages, width_in = [], widths[0]
        for width, stride in zip(widths, (1, 2, 2)):
            blocks = [ResidualBlock(width_in, width, stride)]
            blocks += [ResidualBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class TinyCNN(nn.Module):
    """Three conv-BN-ReLU layers (16, 32, 64 channels), two max-pools, global average pool, Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(in_channels, 16),
            nn.MaxPool2d(2),
            ConvBNReLU(16, 32),
            nn.MaxPool2d(2),
            ConvBNReLU(32, 64),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(64, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _init_weights(model: nn.Module) -> None:
    """He init for convs (as torchvision's ResNet does); BN starts at scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def small_resnet(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int = 1,
    stem_stride: int = 2,
) -> SmallResNet:
    """A small ResNet for 28x28 grayscale (Fashion-MNIST) or 32x32 colour images.

    Takes the input channels, the number of classes, the three stage widths, the number of
    residual blocks per stage and the stem's stride (1 for full resolution at ~3x the compute);
    returns a freshly initialised :class:`SmallResNet`.
    Raises ValueError when ``widths`` does not have three entries or ``blocks_per_stage < 1``.
    """
    return SmallResNet(in_channels, num_classes, tuple(widths), blocks_per_stage, stem_stride)


def tiny_cnn(in_channels: int = 1, num_classes: int = 10) -> TinyCNN:
    """A three-conv CNN (16-32-64 channels) for fast tests; returns a freshly initialised :class:`TinyCNN`."""
    return TinyCNN(in_channels, num_classes)


def fashion_small_resnet(in_channels: int = 1, num_classes: int = 10) -> SmallResNet:
    """`small_resnet()` with the weights trained on Fashion-MNIST that ship with the package (91.9% test
    accuracy; benchmarks/train_demo_model.py made them). The weights file is read like any `--weights` file:
    a state dict, with ``weights_only=True``. Raises UsageError for another channel or class count."""
    from catalyst_deploy.errors import UsageError
    from catalyst_deploy.inputs.models import load_weights

    if (in_channels, num_classes) != (1, 10):
        raise UsageError("zoo:fashion_small_resnet is trained on grayscale images with 10 classes (Fashion-MNIST); "
                         f"the data has {in_channels} channel(s) and {num_classes} classes")
    model = small_resnet(in_channels=1, num_classes=10)
    load_weights(model, PRETRAINED_DIR / "fashion_small_resnet.pt")
    return model


def tiny_vit(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, patch_size: int = 7):
    """torchvision's VisionTransformer at a test size (2 layers, 4 heads of 16, MLP 128) for 28x28 images,
    with a patch embedding for `in_channels`: a transformer for fast tests and the demo data. The head
    starts random (torchvision starts it at zero, which makes every output 0)."""
    import torchvision

    model = torchvision.models.VisionTransformer(image_size, patch_size, num_layers=2, num_heads=4, hidden_dim=64,
                                                 mlp_dim=128, num_classes=num_classes)
    model.conv_proj = nn.Conv2d(in_channels, 64, patch_size, stride=patch_size)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model

