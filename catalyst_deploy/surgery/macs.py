"""The one MAC counter for PyTorch models: torch-pruning's `count_ops_and_params` on an example input, plus
the attention products (q k^T, attn v) of the attention modules whose heads this tool prunes
(`attention.attention_macs`), which torch-pruning's per-layer counter does not see.

`--target-flops` counts multiply-accumulates (MACs) as this counter does; one MAC is two FLOPs, so an
absolute budget of 2.0G means 2e9 MACs. ONNX files are counted by `bench.macs.onnx_macs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, params) of `model` on `example` (one image or a batch: MACs are per call), in eval mode."""
    import torch
    import torch_pruning as tp

    from catalyst_deploy.surgery.attention import attention_macs

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(model, example)
    finally:
        model.train(was_training)
    return int(macs) + attention_macs(model, example), int(params)


def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs of every leaf module by name, from the same counter (for per-layer latency per MAC)."""
    import torch
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, _, per_module, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    finally:
        model.train(was_training)
    return {names[m]: int(v) for m, v in per_module.items()
            if m in names and v is not None and not list(m.children())}  # None: a module it does not count
