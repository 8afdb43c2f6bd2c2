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
    """x * s[chan] along `dim` at positions `pos` (other positions unchanged). `s` is shared by all gates."""

    def __init__(self, s: nn.Parameter, pos: torch.Tensor, chan: torch.Tensor, dim: int):
        super().__init__()
        self.s, self.dim = s, dim
        self.register_buffer("pos", pos)
        self.register_buffer("chan", chan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.s[self.chan]
        factor = torch.ones(x.shape[self.dim], dtype=x.dtype, device=x.device)
        factor = factor.index_copy(0, self.pos, s.to(x.dtype))
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * factor.view(shape)


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


def gate_slices(graph: ChannelGraph, s: torch.Tensor) -> list[tuple[nn.Module, str]]:
    """Register a `ChannelGate` of `s` on every producer slice of `graph` that sets a channel's value (a
    BN's scale and shift; a conv or linear no BN follows: its rows and bias); returns (module, name) of each."""
    owners = {id(p): (m, n) for m in graph.model.modules() for n, p in m.named_parameters(recurse=False)}
    attached = []
    for sl in graph.producer_slices(skip_normalized=True):
        module, name = owners[id(sl.param)]
        parametrize.register_parametrization(module, name, ChannelGate(s, sl.pos, sl.chan, sl.dim))
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
