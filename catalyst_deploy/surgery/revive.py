"""Kept channels that a regularizing method zeroed: restored to their starting weights before the cut.

A method decides a prune set, and the budget rounds it to `--round-to` blocks and keeps at least one block of
every group. When the dynamics zeroed more of a group than the rounding lets go (a whole stage's residual
stream, say), the channels given back are dead: their producers are exactly zero, the activation after them
outputs zero with zero gradient (ReLU), and nothing in recovery can bring them back. A group whose kept channels
are all dead cuts the network in two and the run ends at chance (measured: the demo model with the gated form,
1 + 2 epochs at lr 0.005, went from 92.6% to 10.0% and stayed there). Restoring such a channel's producer
slices (conv/linear rows, biases, norm scale and shift) to the dense model's gives recovery a live channel to
train; the report counts them (`method.revived`), and the accuracy after the decision is measured on the
model with them restored.

    n = revive_dead_channels(graph, dense_model, keep_mask)
"""

from __future__ import annotations

import torch
from torch import nn

from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms


def dead_channels(graph: ChannelGraph) -> torch.Tensor:
    """One bool per global channel: every slice that sets the channel's value (its norm's scale and shift, or
    its producer rows where no norm follows) is exactly zero."""
    return channel_norms(graph.producer_slices(skip_normalized=True), graph.num_channels) == 0


def revive_dead_channels(graph: ChannelGraph, dense: nn.Module, keep: torch.Tensor) -> int:
    """Copy every producer slice of the kept (`keep` True) dead channels from `dense` (the same architecture,
    before the method ran) into the graph's model; returns how many channels were restored."""
    revive = keep.cpu() & dead_channels(graph)
    if not revive.any():
        return 0
    names = {id(p): name for name, p in graph.model.named_parameters()}
    with torch.no_grad():
        for sl in graph.producer_slices():
            rows = revive[sl.chan.cpu()].to(sl.pos.device)
            if not rows.any():
                continue
            source = dense.get_parameter(names[id(sl.param)]).detach().to(sl.param.device, sl.param.dtype)
            pos = sl.pos[rows]
            sl.param.data.index_copy_(sl.dim, pos, source.index_select(sl.dim, pos))
    return int(revive.sum())
