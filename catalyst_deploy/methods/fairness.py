"""A function-preserving rescale of exactly what Catalyst gates, to check whether a method prunes a channel
for what it does or for how large its weights happen to be (Catalyst's "fair chance" property, P2).

    code = rescale_half(model, example, factor=0.1, seed=3)   # 1: rescaled channel, 0: untouched
    gap = share_pruned_gap(mask, code)                        # points; 0 for a magnitude-fair method

The BN scale and shift of a random half of every group's channels are multiplied by k, and every consumer's
input columns of those channels by 1/k. ReLU, max/avg pooling and residual adds are positively homogeneous,
so the model computes the same function (check it); a method that ranks by weight norms sees the rescaled
channels as k times larger or smaller.
"""

from __future__ import annotations

import torch
from torch import nn

from catalyst_deploy.surgery.graph import ChannelGraph, consumer_columns


def rescale_half(model: nn.Module, example: torch.Tensor, factor: float, seed: int) -> torch.Tensor:
    """Rescale in place (see module doc); returns 1 (rescaled) / 0 (untouched) per global channel of
    `ChannelGraph(model, example)`."""
    graph = ChannelGraph(model, example)
    gen = torch.Generator().manual_seed(seed)
    code = torch.zeros(graph.num_channels, dtype=torch.long)
    for g, size in enumerate(graph.sizes):
        code[graph.offsets[g] + torch.randperm(size, generator=gen)[: size // 2]] = 1
    with torch.no_grad():
        for sl in graph.producer_slices(skip_normalized=True):
            idx = sl.pos[code[sl.chan] == 1]
            sl.param.index_copy_(sl.dim, idx, sl.param.index_select(sl.dim, idx) * factor)
        rescaled = set(torch.nonzero(code == 1).flatten().tolist())
        for weight, positions in consumer_columns(graph, rescaled):
            weight[:, positions] *= 1.0 / factor
    return code


def share_pruned_gap(mask: torch.Tensor, code: torch.Tensor) -> float:
    """Points: the share pruned among the rescaled channels minus among the untouched ones."""
    return 100.0 * float(mask[code == 1].float().mean() - mask[code == 0].float().mean())
