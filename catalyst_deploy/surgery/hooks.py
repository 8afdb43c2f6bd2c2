"""One evaluation forward pass with forward hooks attached, the model's mode and the hooks undone after it
(how the graph finds the output layer and the attention counter sees each qkv's output)."""

from __future__ import annotations

import torch
from torch import nn


def eval_forward_with_hooks(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """Run `model` once in eval mode without gradients on `example`, then restore its mode and remove `handles`
    (the `register_forward_hook` handles the caller attached), also when the forward pass fails."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
