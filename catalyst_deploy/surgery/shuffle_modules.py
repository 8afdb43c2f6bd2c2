"""ShuffleNet v2 for the dependency graph: its channel shuffle as a module torch-pruning sees as one layer.

torchvision's ShuffleNet v2 blocks end in `channel_shuffle`, a reshape that interleaves the two branches'
channels (output 2i from the first branch, 2i+1 from the second). torch-pruning cannot map channel indices
through that reshape: building its graph fails (ZeroDivisionError in its reshape index map). Here each block
is swapped for `ShuffleBlock` (same submodules, same names, same outputs) whose shuffle is a `ChannelShuffle`
module; while the graph is traced (`opaque_shuffles`) the shuffle runs as one autograd node that torch-pruning
records as a layer of its own (`custom_pruners`), so the channels on either side of it are separate groups.
Those groups are left whole (the interleaving couples every channel of a stage across all its blocks); the
widths inside each branch (the 1x1 conv, depthwise conv and 1x1 conv between two shuffles) are cut as usual.

    converted = convert_shuffles(model)            # {name: "ShuffleBlock"}; outputs unchanged
    with opaque_shuffles():
        dg = tp.DependencyGraph().build_dependency(model, example, customized_pruners=custom_pruners(model))
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_OPAQUE = [False]  # set while torch-pruning traces the graph (opaque_shuffles)


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's channel_shuffle: (b, c, h, w) with channels g*k + j -> j*groups + g."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c // groups, groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class _OpaqueShuffle(torch.autograd.Function):
    """The shuffle as one autograd node (what torch-pruning's tracer follows): no reshape for it to misread."""

    @staticmethod
    def forward(ctx, x, groups):  # noqa: D102
        ctx.groups = groups
        return shuffle(x, groups)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return unshuffle(grad, ctx.groups), None


class ChannelShuffle(nn.Module):
    """torchvision's channel_shuffle as a module; `channels` is the width it shuffles (for the graph)."""

    def __init__(self, groups: int, channels: int):
        super().__init__()
        self.groups, self.channels = groups, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _OPAQUE[0] and torch.is_grad_enabled():
            return _OpaqueShuffle.apply(x, self.groups)
        return shuffle(x, self.groups)


class ShuffleBlock(nn.Module):
    """torchvision's ShuffleNet v2 InvertedResidual with its shuffle as a `ChannelShuffle` module."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.stride, self.branch1, self.branch2 = block.stride, block.branch1, block.branch2
        width = [m for m in block.branch2 if isinstance(m, nn.BatchNorm2d)][-1].num_features
        self.shuffle = ChannelShuffle(2, 2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def convert_shuffles(model: nn.Module) -> dict[str, str]:
    """Swap, in place, every torchvision ShuffleNet v2 block of `model` for a `ShuffleBlock`; {name: class}."""
    from torchvision.models.shufflenetv2 import InvertedResidual

    swapped = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, ShuffleBlock):
            swapped[name] = "ShuffleBlock"
        elif isinstance(module, InvertedResidual):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, ShuffleBlock(module))
            swapped[name] = "ShuffleBlock"
    return swapped


@contextlib.contextmanager
def opaque_shuffles():
    """While torch-pruning traces: every ChannelShuffle runs as one autograd node."""
    _OPAQUE[0] = True
    try:
        yield
    finally:
        _OPAQUE[0] = False


def custom_pruners(model: nn.Module) -> dict:
    """torch-pruning's customized pruners for `model`: ChannelShuffle as a layer whose channels are never cut
    (the groups through it are left whole), or {} when the model has none."""
    if not any(isinstance(m, ChannelShuffle) for m in model.modules()):
        return {}
    import torch_pruning as tp

    class ShufflePruner(tp.pruner.function.BasePruningFunc):
        # two distinct functions: torch-pruning couples a layer's inputs to its outputs index by index when
        # prune_in_channels is prune_out_channels (a BatchNorm), and the shuffle permutes them
        def prune_out_channels(self, layer, idxs):
            raise RuntimeError("a ChannelShuffle's output channels are left whole")

        def prune_in_channels(self, layer, idxs):
            raise RuntimeError("a ChannelShuffle's input channels are left whole")

        def get_out_channels(self, layer):
            return layer.channels

        def get_in_channels(self, layer):
            return layer.channels

    return {ChannelShuffle: ShufflePruner()}
