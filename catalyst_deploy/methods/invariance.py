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


def column_positions(graph: ChannelGraph, device) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, input positions) of every conv/linear that consumes a channel of `graph`; positions None
    where they are all of the weight's input columns in order (the common case: no gather needed)."""
    out = []
    for w, pos in consumer_columns(graph):
        whole = list(pos) == list(range(w.shape[1]))
        out.append((w, None if whole else torch.tensor(pos, device=device)))
    return out


def precondition_columns(columns: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Multiply the gradient of each consumer input column by its squared norm over 2 * out / in (in place)."""
    with torch.no_grad():
        for weight, pos in columns:
            if weight.grad is None:
                continue
            shape = (1, -1) + (1,) * (weight.dim() - 2)
            expected = 2.0 * weight.shape[0] / weight.shape[1]
            if pos is None:
                dims = [d for d in range(weight.dim()) if d != 1]
                weight.grad.mul_((weight.pow(2).sum(dim=dims) / expected).view(shape))
                continue
            norm2 = weight.index_select(1, pos).pow(2).transpose(0, 1).flatten(1).sum(1)
            weight.grad.index_copy_(1, pos, weight.grad.index_select(1, pos) * (norm2 / expected).view(shape))
