"""ShuffleNet v2 (surgery/shuffle_modules.py): torch-pruning cannot map channels through its channel shuffle, so
each block is swapped for one whose shuffle is a layer of its own; the groups across it stay whole and the
widths inside each branch are cut."""

from __future__ import annotations

import copy

import torch
from torchvision.models import ShuffleNetV2

from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.plan import apply_plan
from catalyst_deploy.surgery.shuffle_modules import ChannelShuffle, _OpaqueShuffle, shuffle, unshuffle


def tiny() -> ShuffleNetV2:
    torch.manual_seed(0)
    return ShuffleNetV2(stages_repeats=[2, 1, 1], stages_out_channels=[8, 16, 32, 64, 64], num_classes=4).eval()


def test_the_opaque_shuffle_is_torchvisions_shuffle_with_its_gradient():
    from torchvision.models.shufflenetv2 import channel_shuffle

    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    assert torch.equal(shuffle(x, 2), channel_shuffle(x, 2))
    assert torch.equal(unshuffle(shuffle(x, 2), 2), x)
    weights = torch.randn(2, 8, 3, 3)
    (channel_shuffle(x, 2) * weights).sum().backward()
    plain, x.grad = x.grad, None
    (_OpaqueShuffle.apply(x, 2) * weights).sum().backward()
    assert torch.equal(x.grad, plain)


def test_shufflenet_is_cut_inside_its_branches_and_rebuilds_from_the_plan():
    model, x = tiny(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    graph = ChannelGraph(model, x[:1])
    assert all(type(model.get_submodule(n)).__name__ == "ShuffleBlock" for n in graph.converted)
    assert len(graph.converted) == 4 and sum(isinstance(m, ChannelShuffle) for m in model.modules()) == 4
    with torch.no_grad():
        assert torch.equal(model(x), reference), "the swap computes what torchvision's blocks computed"
    crossing = [n for n, why in graph.left_alone.items() if "channel shuffle" in why]
    assert crossing, graph.left_alone
    roots = {graph.root_name(g) for g in range(len(graph.sizes))}
    # each branch's inner width (rooted at its depthwise conv), the stem (before any shuffle) and the last conv
    assert {"stage2.0.branch2.3", "stage3.0.branch2.3", "conv1.0", "conv5.0"} <= roots, roots
    keep = torch.ones(graph.num_channels, dtype=torch.bool)
    keep[::2] = False
    plan = graph.plan_for(~keep)
    cut = apply_plan(copy.deepcopy(model), plan)
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in model.parameters())
    assert cut(x).shape == (2, 4)
    rebuilt = apply_plan(tiny(), plan)  # a fresh torchvision model: the plan's `convert` swaps its blocks too
    rebuilt.load_state_dict(cut.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), cut(x))


def test_a_plan_that_converts_the_wrong_module_is_refused():
    """plan.json is read from a file: a `convert` naming a module that is not the stand-in's source is a usage
    error in one line, not an AttributeError from inside the stand-in."""
    import pytest

    from catalyst_deploy.errors import UsageError

    plan = {"format": 2, "layers": {}, "convert": {"conv1": "ShuffleBlock"}}
    with pytest.raises(UsageError, match=r"plan converts 'conv1' \(Sequential\) to ShuffleBlock, which is made from"):
        apply_plan(tiny(), plan)
