"""Kept channels a method zeroed are restored before the cut (surgery/revive.py): a group whose kept channels are
all dead cuts the network in two, and recovery cannot train through it."""

from __future__ import annotations

import copy

import torch

from catalyst_deploy.inputs.zoo import small_resnet
from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.revive import dead_channels, revive_dead_channels


def test_a_dead_kept_group_is_restored_from_the_dense_model():
    torch.manual_seed(0)
    model = small_resnet(widths=(8, 16, 32)).eval()
    dense = copy.deepcopy(model)
    graph = ChannelGraph(model, torch.randn(1, 1, 28, 28))
    sizes = graph.sizes
    stream = max(range(len(sizes)), key=lambda g: sizes[g])  # the widest group: a residual stream, say
    chans = torch.arange(graph.offsets[stream], graph.offsets[stream] + sizes[stream])
    other = torch.arange(graph.offsets[0], graph.offsets[0] + sizes[0]) if stream else None
    with torch.no_grad():  # the method's phase zeroed the whole group (every producer slice), and one channel elsewhere
        for sl in graph.producer_slices():
            hit = torch.isin(sl.chan, chans) | (sl.chan == (other[0] if other is not None else -1))
            sl.param.data.index_fill_(sl.dim, sl.pos[hit], 0.0)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out, out[:1].expand_as(out)), "a dead group makes the output constant"
    keep = torch.ones(graph.num_channels, dtype=torch.bool)
    keep[chans[4:]] = False  # the budget keeps one block of the zeroed group
    if other is not None:
        keep[other[0]] = False  # a zeroed channel that is pruned stays zero
    dead_before = dead_channels(graph)
    assert dead_before[chans].all()

    assert revive_dead_channels(graph, dense, keep) == 4
    dead = dead_channels(graph)
    assert not dead[chans[:4]].any() and dead[chans[4:]].all()
    if other is not None:
        assert dead[other[0]]
    for sl in graph.producer_slices():  # restored exactly to the dense weights
        rows = torch.isin(sl.chan, chans[:4])
        source = dense.get_parameter(next(n for n, p in model.named_parameters() if p is sl.param))
        assert torch.equal(sl.param.index_select(sl.dim, sl.pos[rows]), source.index_select(sl.dim, sl.pos[rows]))
    with torch.no_grad():
        out = model(x)
    assert not torch.allclose(out, out[:1].expand_as(out))
    assert revive_dead_channels(graph, dense, keep) == 0  # nothing left to restore
