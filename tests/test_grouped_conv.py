"""Groups through grouped convolutions (ResNeXt, RegNet; surgery/units.py): a unit is the same channel of every
conv block, and cutting it computes what zeroing it did."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.units import Interleaved


def block() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():  # BatchNorms with statistics of their own, so that a zeroed channel is not trivial
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_a_grouped_conv_loses_the_same_channels_in_every_block_and_the_cut_is_exact():
    model = block()
    graph = ChannelGraph(model, torch.randn(1, 3, 8, 8))
    interleaved = [g for g in range(len(graph.sizes)) if isinstance(graph.units[g], Interleaved)]
    assert len(interleaved) == 2 and all(graph.sizes[g] == 4 and graph.unit_widths[g] == 4 for g in interleaved)
    assert {graph.kind(g) for g in interleaved} == {"grouped-conv channels"}
    mask = torch.zeros(graph.num_channels, dtype=torch.bool)
    first, second = sorted(interleaved, key=lambda g: "0" not in graph.layers_of_group(g))  # into conv 3, out of it
    mask[graph.offsets[first] + 1] = True  # channel 1 of each of the 4 blocks going into the grouped conv
    mask[graph.offsets[second] + torch.tensor([0, 2])] = True  # channels 0 and 2 of each block it outputs
    zeroed = copy.deepcopy(model)
    slices = ChannelGraph(zeroed, torch.randn(1, 3, 8, 8)).producer_slices()
    with torch.no_grad():  # what the cut must compute: those channels' producers at zero
        for sl in slices:
            sl.param.data.index_fill_(sl.dim, sl.pos[mask[sl.chan]], 0.0)
    cut = graph.cut_copy(mask)
    conv = cut[3]
    assert (conv.groups, conv.in_channels, conv.out_channels) == (4, 12, 8)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(cut(x), zeroed(x), atol=1e-6)
    keep_rows = [r for r in range(16) if r % 4 not in (0, 2)]  # the rest of each block, in order
    keep_cols = [c for c in range(4) if c != 1]  # each block's input columns, less channel 1
    assert torch.equal(conv.weight, model[3].weight[keep_rows][:, keep_cols])
    assert torch.equal(cut[0].weight, model[0].weight[[r for r in range(16) if r % 4 != 1]])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["regnet_x_400mf", "shufflenet_v2_x0_5"])
@pytest.mark.parametrize("method", ["catalyst", "catalyst-gated", "l1", "group-lasso", "slimming", "taylor", "random",
                                    "depgraph"])
def test_every_method_prunes_grouped_convs_and_shufflenet(tmp_path, model, method):
    """torch-pruning's own regularizers (DepGraph, group lasso, slimming) fail on grouped convs and cannot trace
    ShuffleNet's shuffle by themselves: every method goes through the same graph (methods/tp_pruner.py)."""
    from PIL import Image

    from catalyst_deploy import api

    root, noise = tmp_path / "images", torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 3)):
        for label in ("a", "b"):  # noise: on solid gray images regnet's fine-tuning gave nan at step 2
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(32, 32, 3, generator=noise) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    cfg = api.load_config(model=f"torchvision:{model}", data=f"imagefolder:{root}", input_shape=(1, 3, 32, 32),
                          method=method, out=str(tmp_path / "run"), batch_size=4, steps_per_epoch=2, reg_epochs=1,
                          recover_epochs=1, device="cpu", threads=1)
    report = api.prune(cfg, log=lambda _m: None)
    assert 0.35 <= report.macs.ratio <= 0.5
