"""Catalyst's gates: one scalar per channel that multiplies the channel's producer parameters.

A gate is a `torch.nn.utils.parametrize` parametrization of each producer parameter (a BN's weight and
bias, a conv's weight...), so the forward pass costs one multiply per parameter vector, not per
activation, and `fold()` writes the gated values back into the parameters exactly (the parametrization
is removed with `leave_parametrized=True`).
"""

from __future__ import annotations

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from catalyst_deploy.surgery.graph import ChannelGraph


class ChannelGate(nn.Module):
    """x * s[chan] along `dim` at positions `pos` (other positions unchanged). `s` is shared by all gates.

    With a `sign` (the paper form's catalyst term), the factor is 1 + sign * (s - sg(s)): exactly 1 in value,
    so the parameter is unchanged, while s[chan] receives sign * sum(x * dL/dx) over the channel's slice."""

    def __init__(self, s: nn.Parameter, pos: torch.Tensor, chan: torch.Tensor, dim: int, sign: float | None = None):
        super().__init__()
        self.s, self.dim, self.sign = s, dim, sign
        self.register_buffer("pos", pos)
        self.register_buffer("chan", chan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sign is not None:
            return _CatalystTerm.apply(x, self.s, self.chan, self.pos, self.dim, self.sign)
        s = self.s[self.chan]
        factor = torch.ones(x.shape[self.dim], dtype=x.dtype, device=x.device)
        factor = factor.index_copy(0, self.pos, s.to(x.dtype))
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * factor.view(shape)


class _CatalystTerm(torch.autograd.Function):
    """x times 1 + sign * (s - sg(s)) along `dim`, in one autograd node: the value is x, x's gradient passes
    unchanged, and s[chan] receives sign * sum(x * dL/dx) over the channel's slice. The same numbers as
    the composed operations (index, subtract, scale, index_copy, multiply), half their cost on
    resnet50 (docs/method.md, "What it costs")."""

    @staticmethod
    def forward(ctx, x, s, chan, pos, dim, sign):
        ctx.save_for_backward(x, chan, pos)
        ctx.dim, ctx.sign, ctx.size, ctx.dtype = dim, sign, s.shape[0], s.dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, chan, pos = ctx.saved_tensors
        per_pos = grad * x
        other = [d for d in range(x.dim()) if d != ctx.dim]
        if other:
            per_pos = per_pos.sum(dim=other)
        grad_s = torch.zeros(ctx.size, dtype=ctx.dtype, device=per_pos.device)
        grad_s.index_add_(0, chan, (ctx.sign * per_pos.index_select(0, pos)).to(ctx.dtype))
        return grad, grad_s, None, None, None, None


class Gates:
    """The gates of every prunable channel of a graph's model; `s` (one per global channel) starts at 1.

    While the gates are attached, the gated parameters themselves do not train: the gate carries each
    channel's scale, and letting SGD move the scale of the same channel through two factors (s and the BN
    scale) makes the split depend on how large the channel's weights happen to be (docs/method.md, P2)."""

    def __init__(self, s: nn.Parameter, attached: list[tuple[nn.Module, str]]):
        self.s, self.attached = s, attached
        for module, name in attached:
            module.parametrizations[name].original.requires_grad_(False)

    def fold(self) -> None:
        """Write s into the gated parameters (exact), remove the gates, let the parameters train again."""
        remove_gates(self.attached)
        for module, name in self.attached:
            getattr(module, name).requires_grad_(True)
        self.attached = []


def attach_gates(graph: ChannelGraph, device) -> Gates:
    """Gate every producer slice of `graph` (BN-normalised conv rows left out: a BN makes them
    scale-free, and the BN's own scale and shift carry the channel)."""
    s = nn.Parameter(torch.ones(graph.num_channels, device=device))
    return Gates(s, gate_slices(graph, s))


def gate_slices(graph: ChannelGraph, s: torch.Tensor, sign: float | None = None) -> list[tuple[nn.Module, str]]:
    """Register a `ChannelGate` of `s` on every producer slice of `graph` that sets a channel's value (a
    BN's scale and shift; a conv or linear no BN follows: its rows and bias); returns (module, name) of each."""
    owners = {id(p): (m, n) for m in graph.model.modules() for n, p in m.named_parameters(recurse=False)}
    attached = []
    for sl in graph.producer_slices(skip_normalized=True):
        module, name = owners[id(sl.param)]
        parametrize.register_parametrization(module, name, ChannelGate(s, sl.pos, sl.chan, sl.dim, sign))
        attached.append((module, name))
    return attached


def remove_gates(attached: list[tuple[nn.Module, str]]) -> None:
    """Take the gates off, leaving each parameter at its gated value (a parameter with several gated slices
    has one list of them: removed once)."""
    for module, name in dict.fromkeys(attached):
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def channel_costs(graph: ChannelGraph, budget) -> torch.Tensor:
    """Per global channel, what removing one channel of its group saves: MACs measured by a trial cut per
    group (`budget.macs_of`), times the group's latency weight under --latency-aware; scaled to mean 1."""
    dense = budget.macs_of(torch.zeros(graph.num_channels, dtype=torch.bool))
    per_group = []
    for g in range(len(graph.sizes)):
        mask = torch.zeros(graph.num_channels, dtype=torch.bool)
        mask[graph.offsets[g]] = True
        per_group.append(max(1, dense - budget.macs_of(mask)))
    saved = torch.tensor(per_group, dtype=torch.float32)
    if budget.group_weight is not None:
        saved = saved * budget.group_weight.float()
    per_channel = torch.repeat_interleave(saved, torch.tensor(graph.sizes))
    return per_channel / per_channel.mean()
