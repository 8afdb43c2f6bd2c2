"""Head-prunable stand-ins for torchvision's attention modules, and the conversion that swaps them in.

torchvision computes its attention's head width from the embedding width: `nn.MultiheadAttention` needs
the query/key/value width to equal `embed_dim`, and Swin's `shifted_window_attention` reshapes with
`C // num_heads`. Neither can lose a head. The modules here compute the same function from the same
parameters (same names: `qkv`, `proj`, the position-bias table), but keep `num_heads` and `head_dim` as
their own attributes, so that removing a head only shrinks `qkv`, `proj` and the per-head tables.

    converted, kept = convert_attention(model, example)   # {name: class name}, {name: why not}; same outputs

The conversion is exact up to float round-off (tests/test_transformers.py checks it against torchvision).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PackedSelfAttention(nn.Module):
    """Multi-head self-attention with one packed `qkv` projection ([q; k; v], each num_heads * head_dim
    rows, head after head) and an output projection `proj`. Called like `nn.MultiheadAttention` for
    self-attention (`attn(x, x, x, need_weights=False)` returns `(out, None)`)."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True, dropout: float = 0.0,
                 batch_first: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout, self.batch_first = num_heads, head_dim, dropout, batch_first
        self.scale = head_dim ** -0.5  # fixed: removing heads must not rescale the others
        self.qkv = nn.Linear(embed_dim, 3 * num_heads * head_dim, bias=bias)
        self.proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention) -> PackedSelfAttention:
        heads = mha.num_heads
        new = cls(mha.embed_dim, heads, mha.embed_dim // heads, mha.in_proj_bias is not None, mha.dropout,
                  mha.batch_first)
        with torch.no_grad():
            new.qkv.weight.copy_(mha.in_proj_weight)
            new.proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                new.qkv.bias.copy_(mha.in_proj_bias)
                new.proj.bias.copy_(mha.out_proj.bias)
        return new.to(mha.in_proj_weight.device).train(mha.training)

    def forward(self, query, key=None, value=None, need_weights: bool = False, **_unused):
        if not self.batch_first:
            query = query.transpose(0, 1)
        batch, tokens, _ = query.shape
        qkv = self.qkv(query).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


class WindowSelfAttention(nn.Module):
    """Shifted-window self-attention of torchvision's Swin (v1: a learned bias table; v2: cosine attention
    with a per-head logit scale and an MLP bias), with its own `num_heads` and `head_dim`. Input and
    output are B, H, W, C."""

    @classmethod
    def from_torchvision(cls, source: nn.Module) -> WindowSelfAttention:
        new = cls()
        new.window_size, new.shift_size = list(source.window_size), list(source.shift_size)
        new.num_heads = source.num_heads
        new.head_dim = source.qkv.out_features // (3 * source.num_heads)
        new.scale = new.head_dim ** -0.5
        new.attention_dropout, new.dropout = source.attention_dropout, source.dropout
        new.qkv, new.proj = source.qkv, source.proj
        new.logit_scale = getattr(source, "logit_scale", None)  # v2 only
        if new.logit_scale is not None:
            new.cpb_mlp = source.cpb_mlp
            new.register_buffer("relative_coords_table", source.relative_coords_table)
        else:
            new.relative_position_bias_table = source.relative_position_bias_table
        new.register_buffer("relative_position_index", source.relative_position_index)
        return new.train(source.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (-width) % ww, 0, (-height) % wh))
        padded_h, padded_w = x.shape[1], x.shape[2]
        # a window as large as the map sees all of it: shifting would only move the padding
        shift = (self.shift_size[0] if wh < padded_h else 0, self.shift_size[1] if ww < padded_w else 0)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        rows, cols = padded_h // wh, padded_w // ww
        windows = x.view(batch, rows, wh, cols, ww, channels).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, channels)
        mask = _shift_mask(padded_h, padded_w, self.window_size, shift, x) if any(shift) else None
        out = self._attend(windows, mask, rows * cols)
        out = out.view(batch, rows, cols, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
        if any(shift):
            out = torch.roll(out, shifts=shift, dims=(1, 2))
        return out[:, :height, :width, :].contiguous()

    def _attend(self, windows: torch.Tensor, mask: torch.Tensor | None, per_image: int) -> torch.Tensor:
        n, tokens, _ = windows.shape
        qkv = self.qkv(windows)
        if self.logit_scale is not None and self.qkv.bias is not None:  # v2 never uses its key bias
            qkv = qkv - self._key_bias()
        q, k, v = qkv.reshape(n, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.logit_scale is not None:
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = logits + self._position_bias(tokens)
        if mask is not None:
            logits = (logits.view(n // per_image, per_image, self.num_heads, tokens, tokens)
                      + mask[None, :, None]).view(n, self.num_heads, tokens, tokens)
        attn = F.dropout(logits.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = (attn @ v).transpose(1, 2).reshape(n, tokens, self.num_heads * self.head_dim)
        return F.dropout(self.proj(out), p=self.dropout, training=self.training)

    def _key_bias(self) -> torch.Tensor:
        width = self.num_heads * self.head_dim
        keep = torch.zeros_like(self.qkv.bias)
        keep[width:2 * width] = 1.0
        return self.qkv.bias * keep

    def _position_bias(self, tokens: int) -> torch.Tensor:
        table = (self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads) if self.logit_scale is not None
                 else self.relative_position_bias_table)
        bias = table[self.relative_position_index].view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)
        return 16 * torch.sigmoid(bias) if self.logit_scale is not None else bias


def _shift_mask(padded_h: int, padded_w: int, window: list[int], shift: tuple[int, int], like: torch.Tensor):
    """-100 between tokens of one window that came from different regions of the shifted map, else 0
    (windows, tokens, tokens)."""
    region = like.new_zeros((padded_h, padded_w))
    bands_h = (0, padded_h - window[0], padded_h - shift[0], padded_h)
    bands_w = (0, padded_w - window[1], padded_w - shift[1], padded_w)
    label = 0
    for top, bottom in zip(bands_h[:-1], bands_h[1:]):
        for left, right in zip(bands_w[:-1], bands_w[1:]):
            region[top:bottom, left:right] = label
            label += 1
    wh, ww = window
    region = region.view(padded_h // wh, wh, padded_w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    differs = region.unsqueeze(1) - region.unsqueeze(2)
    return differs.masked_fill(differs != 0, -100.0).masked_fill(differs == 0, 0.0)


def convert_attention(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, str], dict[str, str]]:
    """Swap, in place, every torchvision attention module of `model` that can be made head-prunable for its
    stand-in here. Returns ({module name: stand-in class name}, {module name: why it was not swapped}).

    A `nn.MultiheadAttention` is swapped only where a forward pass on `example` shows it used as plain
    self-attention (query, key and value the same tensor, no masks). When the swapped model does not compute
    what it did on `example` (e.g. torch's TransformerEncoderLayer reads the attention's own internals on its
    fast path), every swap is undone and each module gets that reason."""
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    reference, self_attention = _outputs_and_self_attention(model, example)
    swapped, originals = {}, {}
    for name, module in list(model.named_modules()):
        if isinstance(module, (PackedSelfAttention, WindowSelfAttention)):  # swapped before: plan.json needs it too
            swapped[name] = type(module).__name__
            continue
        if isinstance(module, ShiftedWindowAttention):
            new = WindowSelfAttention.from_torchvision(module)
        elif isinstance(module, nn.MultiheadAttention) and name in self_attention:
            new = PackedSelfAttention.from_multihead_attention(module)
        else:
            continue
        originals[name] = module
        _replace(model, name, new)
        swapped[name] = type(new).__name__
    if originals and not _computes(model, example, reference):
        for name, module in originals.items():
            _replace(model, name, module)
        why = ("its model reads the attention module's own internals (the swap for a head-prunable equivalent "
               "changed the outputs): heads left whole")
        return {}, {name: why for name in originals}
    return swapped, {}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _computes(model: nn.Module, example: torch.Tensor, reference: list) -> bool:
    """Whether `model` still gives `reference` on `example` (up to float round-off)."""
    try:
        with torch.no_grad():
            outputs = as_output_list(model.eval()(example))
        return len(outputs) == len(reference) and all(
            out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))
            for out, ref in zip(outputs, reference))
    except Exception:  # noqa: BLE001 - any failure (or outputs that are not tensors) means: keep torchvision's
        return False


STAND_INS = ("PackedSelfAttention", "WindowSelfAttention", "ShuffleBlock")  # what a plan's `convert` may name


def convert_named(model: nn.Module, converted: dict[str, str]) -> None:
    """Repeat a recorded conversion on a freshly built model (plan.json's `convert`); modules already
    converted are left as they are."""
    from torchvision.models.shufflenetv2 import InvertedResidual
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    from catalyst_deploy.errors import UsageError
    from catalyst_deploy.surgery.shuffle_modules import ShuffleBlock

    # stand-in: (what it is made from, how); a plan is read from a file, so the source class is checked first
    makers = {"PackedSelfAttention": (nn.MultiheadAttention, PackedSelfAttention.from_multihead_attention),
              "WindowSelfAttention": (ShiftedWindowAttention, WindowSelfAttention.from_torchvision),
              "ShuffleBlock": (InvertedResidual, ShuffleBlock)}
    assert set(makers) == set(STAND_INS)

    for name, kind in converted.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UsageError(f"plan converts {name!r}, which this model does not have: wrong architecture?") from None
        if type(module).__name__ == kind:
            continue
        source, make = makers[kind]
        if not isinstance(module, source):
            raise UsageError(f"plan converts {name!r} ({type(module).__name__}) to {kind}, which is made from a "
                             f"{source.__name__}: wrong architecture?")
        _replace(model, name, make(module))


def _outputs_and_self_attention(model: nn.Module, example: torch.Tensor) -> tuple[list, set[str]]:
    """`model`'s outputs on `example`, and the names of the `nn.MultiheadAttention` modules that forward pass
    calls as unmasked self-attention with a packed projection (the only use the stand-in reproduces)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    seen: dict[str, bool] = {}

    def record(module, args, kwargs):
        q, k, v = (list(args) + [kwargs.get("key"), kwargs.get("value")])[:3]
        masked = any(kwargs.get(key) is not None for key in ("attn_mask", "key_padding_mask")) or len(args) > 3
        plain = (q is k is v and not masked and module._qkv_same_embed_dim and module.bias_k is None
                 and not module.add_zero_attn)
        seen[names[module]] = seen.get(names[module], True) and plain

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in names]
    was_training = model.training
    try:
        with torch.no_grad():
            outputs = as_output_list(model.eval()(example))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return outputs, {name for name, plain in seen.items() if plain}


def as_output_list(output) -> list:
    """A model output (a tensor, or nested tuples/lists of them) as a flat list."""
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in as_output_list(item)]
    return [output]

