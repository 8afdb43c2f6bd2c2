"""Attention heads as channel groups: which attention modules can lose whole heads, and how.

A multi-head attention module with a packed `qkv` projection (rows [q; k; v], each `num_heads * head_dim`
wide, head after head) and an output projection `proj` loses head `h` by dropping rows `h*head_dim ...
(h+1)*head_dim - 1` of each of q, k and v, the same columns of `proj`, column `h` of its per-head tables
(Swin's relative-position bias, v2's logit scale and bias MLP), and one from `num_heads` (and timm's
`attn_dim`). The other heads compute exactly what they did: each head's scale stays `head_dim ** -0.5`.

Known layouts: timm's `Attention` (ViT, DeiT, ...) and Swin `WindowAttention`, and this package's
stand-ins for torchvision's (`attention_modules`: `nn.MultiheadAttention` in ViT, Swin v1/v2). Any other
module with a `num_heads` attribute keeps its heads: its projections are left whole, with the reason.

    heads, left_alone = find_attention(model)
    heads[0].qkv_rows([1])        # the qkv rows of head 1
    set_kept_heads(heads[0].module, [0, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from catalyst_deploy.surgery.hooks import eval_forward_with_hooks

# stand-in / timm classes whose forward reads the head count and width from attributes (module, class)
KNOWN_LAYOUTS = {
    ("catalyst_deploy.surgery.attention_modules", "PackedSelfAttention"),
    ("catalyst_deploy.surgery.attention_modules", "WindowSelfAttention"),
    ("timm.layers.attention", "Attention"),
    ("timm.models.swin_transformer", "WindowAttention"),
}
PER_HEAD_TABLES = ("relative_position_bias_table", "logit_scale")  # parameters with one column (row) per head
PER_HEAD_LAYERS = ("cpb_mlp.2",)  # layers with one output per head (Swin v2's bias MLP)


@dataclass(frozen=True)
class AttentionHeads:
    """One head-prunable attention module: names (as in `model.named_modules()`) and its head geometry."""

    name: str
    module: nn.Module
    qkv: str
    proj: str
    num_heads: int
    head_dim: int
    per_head_layers: tuple[str, ...] = ()

    def qkv_rows(self, heads) -> list[int]:
        """Output rows of `qkv` that belong to `heads` (their q, k and v parts)."""
        width = self.num_heads * self.head_dim
        return sorted(part * width + h * self.head_dim + i for part in range(3) for h in heads
                      for i in range(self.head_dim))

    def proj_columns(self, heads) -> list[int]:
        """Input columns of `proj` that read `heads`."""
        return sorted(h * self.head_dim + i for h in heads for i in range(self.head_dim))

    def head_of_qkv_row(self) -> torch.Tensor:
        """The head of every qkv output row (3 * num_heads * head_dim entries)."""
        return (torch.arange(3 * self.num_heads * self.head_dim) % (self.num_heads * self.head_dim)) // self.head_dim


def find_attention(model: nn.Module) -> tuple[list[AttentionHeads], dict[str, str]]:
    """The head-prunable attention modules of `model`, and {name: reason} for the attention modules whose
    heads stay whole."""
    found, left_alone = [], {}
    for name, module in model.named_modules():
        if not _is_attention(module):
            continue
        reason = _unsupported(module)
        if reason:
            left_alone[name] = reason
            continue
        layers = tuple(f"{name}.{layer}" for layer in PER_HEAD_LAYERS if _has(module, layer))
        found.append(AttentionHeads(name, module, f"{name}.qkv", f"{name}.proj", module.num_heads, head_width(module),
                                    layers))
    return found, left_alone


def _is_attention(module: nn.Module) -> bool:
    """A module with a head count and projections of its own (a block that holds one, and only stores its
    head count, is not)."""
    if not isinstance(getattr(module, "num_heads", getattr(module, "n_heads", None)), int):
        return False  # torchvision's MaxVit names it n_heads
    if isinstance(module, nn.MultiheadAttention):
        return True
    return any(isinstance(child, (nn.Linear, nn.modules.conv._ConvNd)) for child in module.children())


def _unsupported(module: nn.Module) -> str | None:
    """Why `module`'s heads cannot be removed, or None when they can."""
    kind = type(module)
    if (kind.__module__, kind.__name__) not in KNOWN_LAYOUTS:
        return f"{kind.__name__}: an attention layout this tool does not know, heads left whole"
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear):
        return f"{kind.__name__}: no packed qkv projection, heads left whole"
    if getattr(module, "gate", None) is not None or not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
        return f"{kind.__name__}: a gated or normalised attention output, heads left whole"
    if qkv.out_features % (3 * module.num_heads) or module.num_heads < 2:
        return f"{kind.__name__}: {module.num_heads} head(s) over {qkv.out_features} qkv rows, heads left whole"
    return None


def head_width(module: nn.Module) -> int:
    """The width of one head; it never changes when heads are removed. timm's Swin keeps it only in its
    scale (head_dim ** -0.5)."""
    width = getattr(module, "head_dim", None)
    return int(width) if width else round(module.scale ** -2)


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def set_kept_heads(module: nn.Module, keep: list[int]) -> None:
    """Make an attention module (its projections already cut) use only the heads `keep` of its current
    heads: per-head tables sliced, `num_heads` (and timm's `attn_dim`) updated."""
    index = torch.tensor(sorted(keep), dtype=torch.long)
    for table in PER_HEAD_TABLES:
        param = getattr(module, table, None)
        if isinstance(param, nn.Parameter):
            dim = 1 if table == "relative_position_bias_table" else 0
            sliced = param.data.index_select(dim, index.to(param.device)).clone()
            setattr(module, table, nn.Parameter(sliced, requires_grad=param.requires_grad))
    module.num_heads = len(keep)
    if hasattr(module, "attn_dim"):
        module.attn_dim = len(keep) * module.head_dim


def sync_embedding_width(model: nn.Module) -> None:
    """Models that store their embedding width in an attribute their forward pass reads get it from the
    (cut) layer that sets it: torchvision's VisionTransformer reshapes its patches with `hidden_dim`."""
    for module in model.modules():
        if type(module).__name__ == "VisionTransformer" and type(module).__module__.startswith("torchvision."):
            module.hidden_dim = module.conv_proj.out_channels


def attention_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the attention products (q k^T and attn v) of the known attention modules on
    `example`, which torch-pruning's layer counter does not see."""
    return sum(attention_macs_by_module(model, example).values())


def attention_macs_by_module(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """{attention module name: MACs of its q k^T and attn v products on `example`}. Every known layout runs
    `qkv` on (..., tokens, 3 * heads * head_dim) and attends over those same tokens (a window, or the
    sequence): each product is tokens x tokens x heads x head_dim per sequence."""
    # every module of a known layout with a packed qkv, prunable or not: a module cut to its last head still
    # computes both products (it is no longer head-prunable, but its MACs must not vanish from the count)
    counted = {name: module for name, module in model.named_modules() if _is_attention(module)
               and (type(module).__module__, type(module).__name__) in KNOWN_LAYOUTS
               and isinstance(getattr(module, "qkv", None), nn.Linear)}
    if not counted:
        return {}
    totals = {name: 0 for name in counted}

    def counter(name: str):
        def count(_module, _args, out):
            totals[name] += 2 * (out.numel() // 3) * out.shape[-2]
        return count

    eval_forward_with_hooks(model, example, [m.qkv.register_forward_hook(counter(name)) for name, m in counted.items()])
    return totals
