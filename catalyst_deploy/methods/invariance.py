"""An update that commutes with a function-preserving rescale of a channel (docs/method.md, "fair chance").

Scaling channel j's producer parameters by k and its consumers' input columns by 1/k leaves the model's
function unchanged, but plain SGD then trains it differently: a column scaled by 1/k gets a gradient k times
larger, so it moves k^2 times faster relative to its size. Multiplying each consumer input column's task
gradient by its squared norm over its expected squared norm at initialisation (2 * out / in, from the shape
alone) makes its step scale by 1/k, exactly like the column. SGD's weight decay and momentum are linear, so
they commute too. Both Catalyst forms use it for the weights around the channels they decide on.
"""

from __future__ import annotations

import torch

from catalyst_deploy.surgery.graph import ChannelGraph, consumer_columns


def column_positions(graph: ChannelGraph, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, input positions) of every conv/linear that consumes a channel of `graph`."""
    return [(w, torch.tensor(pos, device=device)) for w, pos in consumer_columns(graph)]


def precondition_columns(columns: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Multiply the gradient of each consumer input column by its squared norm over 2 * out / in (in place)."""
    with torch.no_grad():
        for weight, pos in columns:
            if weight.grad is None:
                continue
            norm2 = weight.index_select(1, pos).pow(2).transpose(0, 1).flatten(1).sum(1)
            scale = norm2 / (2.0 * weight.shape[0] / weight.shape[1])
            shape = (1, -1) + (1,) * (weight.dim() - 2)
            weight.grad.index_copy_(1, pos, weight.grad.index_select(1, pos) * scale.view(shape))
