"""What one prunable unit of a channel group is: a channel, an attention head, or, in a group that passes
through a grouped convolution, the same channel of every conv group.

A grouped convolution (1 < groups < in_channels: ResNeXt, RegNet) computes each of its `groups` blocks of
output channels from one block of input channels. torch-pruning cuts it by removing the same positions from
every block (its weight keeps `groups` blocks, each narrower): channel j of block k is position k * width + j,
and unit j of the group is {k * width + j for every block k}. A group is cut this way only when every grouped
conv in it has the same number of blocks and sees the group's positions unmapped (no concatenation or
reshape between the root and the conv); otherwise it stays whole, with the reason.

    unit = interleaved_unit(group)          # Interleaved(groups) or a reason (str), None for a plain group
    unit_positions(unit, size)              # the unit of each root position
    positions_of(unit, size, [0, 3])        # the root positions that units 0 and 3 remove
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Interleaved:
    """A group that passes through grouped convolutions of `groups` blocks: a unit is one position per block."""

    groups: int


def is_heads(unit) -> bool:
    return unit is not None and not isinstance(unit, (str, Interleaved))


def unit_kind(unit) -> str:
    if is_heads(unit):
        return "heads"
    if isinstance(unit, Interleaved):
        return "grouped-conv channels"
    return unit or "channels"


def group_size(group, unit) -> int:
    """Units in a group: heads, positions per conv block, or channels."""
    if is_heads(unit):
        return unit.num_heads
    return len(group[0].idxs) // (unit.groups if isinstance(unit, Interleaved) else 1)


def unit_width(unit) -> int:
    """Channels (root positions) per unit."""
    if is_heads(unit):
        return unit.head_dim
    return unit.groups if isinstance(unit, Interleaved) else 1


def unit_positions(unit, size: int) -> torch.Tensor:
    """The unit (within its group) of each of the group root's positions."""
    if is_heads(unit):
        return unit.head_of_qkv_row()
    if isinstance(unit, Interleaved):
        return torch.arange(size * unit.groups) % size
    return torch.arange(size)


def positions_of(unit, size: int, idxs: list[int]) -> list[int]:
    """The root positions that removing units `idxs` removes (heads are cut by `head_cut` instead)."""
    if isinstance(unit, Interleaved):
        return sorted(block * size + j for block in range(unit.groups) for j in idxs)
    return idxs


def interleaved_unit(group) -> Interleaved | str | None:
    """Interleaved(groups) when `group` passes through grouped (not depthwise) convolutions that can lose the
    same positions in every block, a reason (str) when it passes through one that cannot, None otherwise."""
    blocks = set()
    for item in group:
        m = item.dep.target.module
        if not (isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.in_channels):
            continue
        if list(item.idxs) != list(item.root_idxs) or len(item.idxs) % m.groups:
            return ("a grouped convolution reached through a concatenation or reshape: its blocks cannot lose "
                    "the same channels, left whole")
        blocks.add(m.groups)
    if not blocks:
        return None
    if len(blocks) > 1:
        return f"grouped convolutions with different block counts ({sorted(blocks)}) in one group: left whole"
    return Interleaved(blocks.pop())
