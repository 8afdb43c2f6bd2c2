"""Vision transformers: heads and MLP units are channel groups, cut consistently, rebuilt from plan.json,
exported with a dynamic batch; torchvision's attention is swapped for stand-ins that compute the same."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.surgery.attention import find_attention
from catalyst_deploy.surgery.attention_modules import convert_attention
from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.surgery.plan import apply_plan, rebuild_pruned


def tv_vit():
    return torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=256,
                                                num_classes=10)


def tv_swin():
    return SwinTransformer([4, 4], 64, [2, 2], [4, 8], [4, 4], num_classes=10)


def tv_swin_v2():
    return SwinTransformer([4, 4], 64, [2, 2], [4, 8], [4, 4], num_classes=10, block=SwinTransformerBlockV2,
                           downsample_layer=PatchMergingV2)


def timm_deit():
    timm = pytest.importorskip("timm")
    return timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                             num_classes=10)


def timm_swin():
    timm = pytest.importorskip("timm")
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=32, embed_dim=64, depths=(2, 2),
                             num_heads=(4, 8), window_size=4, num_classes=10)


def timm_convnext():
    timm = pytest.importorskip("timm")
    return timm.create_model("convnext_tiny", dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_classes=10)


TRANSFORMERS = {"tv_vit": tv_vit, "tv_swin": tv_swin, "tv_swin_v2": tv_swin_v2, "timm_deit": timm_deit,
                "timm_swin": timm_swin}


def built(make):
    """A model with random weights everywhere (torchvision starts its ViT head at zero: every output 0), and
    per-head tables that differ from head to head (Swin v2 starts every head's logit scale equal)."""
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and float(p.abs().max()) == 0:
                torch.nn.init.normal_(p, std=0.1)
            if name.endswith(("relative_position_bias_table", "logit_scale")):
                p.add_(torch.randn_like(p))
    return model


def cut_kind_first(model, example, kind: str, target=0.5, prune_embedding=False):
    """Cut `model` to `target` of its MACs (counted after the graph swapped torchvision's attention in, which
    makes its attention products countable), taking the groups of `kind` first; returns (graph, plan, dense
    MACs)."""
    graph = ChannelGraph(model, example, prune_embedding=prune_embedding)
    priority = -channel_norms(graph.producer_slices(), graph.num_channels)
    for g in range(len(graph.sizes)):
        if graph.kind(g) == kind:
            priority[graph.offsets[g]:graph.offsets[g + 1]] += 1000.0
    dense = count_macs(model, example)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, target * dense, 8, 0.9, unit_width=tuple(graph.unit_widths))
    plan = graph.plan_for(budget.select(priority))
    apply_plan(model, plan)
    return graph, plan, dense


@pytest.mark.parametrize("make", [tv_vit, tv_swin, tv_swin_v2])
def test_stand_ins_compute_what_torchvision_computes(make):
    model = built(make)
    x = torch.randn(2, 3, 40, 40) if make is not tv_vit else torch.randn(2, 3, 32, 32)  # 40: padded windows
    with torch.no_grad():
        expected = model(x)
        swapped, kept = convert_attention(model, x[:1])
        actual = model(x)
    assert (len(swapped) == 2 if make is tv_vit else len(swapped) == 4) and kept == {}
    assert convert_attention(model, x[:1]) == (swapped, {})  # a second graph on the same model records the swap too
    assert float(expected.abs().max()) > 0.01
    assert torch.allclose(actual, expected, atol=1e-6, rtol=1e-5), float((actual - expected).abs().max())


def test_a_masked_multihead_attention_is_not_swapped():
    class CrossAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.memory = torch.nn.Parameter(torch.randn(1, 5, 16))

        def forward(self, x):
            return self.attn(x, self.memory.expand(len(x), -1, -1), self.memory.expand(len(x), -1, -1))[0]

    model = CrossAttention()
    assert convert_attention(model, torch.randn(1, 4, 16)) == ({}, {})
    assert isinstance(model.attn, torch.nn.MultiheadAttention)


def test_a_swap_that_changes_the_outputs_is_undone():
    """torch's own TransformerEncoderLayer reads its attention's in_proj_bias on its fast path: the swap is
    undone, the heads stay whole with the reason, and the feed-forward units are still cut."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 64, batch_first=True)
    model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 2), torch.nn.Flatten(), torch.nn.Linear(80, 3))
    model.eval()
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        expected = model(x)
    graph = ChannelGraph(model, x)
    assert graph.converted == {} and isinstance(model[0].layers[0].self_attn, torch.nn.MultiheadAttention)
    assert "changed the outputs" in graph.left_alone["0.layers.0.self_attn"]
    assert {graph.root_name(g) for g in range(len(graph.sizes))} == {"0.layers.0.linear1", "0.layers.1.linear1"}
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def head_geometry_is_consistent(model) -> None:
    """Every attention module's head count agrees with its projections and per-head tables (what forward reads)."""
    for heads in find_attention(model)[0]:
        m, hd = heads.module, heads.head_dim
        assert m.qkv.out_features == 3 * m.num_heads * hd, heads.name
        assert m.proj.in_features == m.num_heads * hd, heads.name
        if getattr(m, "relative_position_bias_table", None) is not None:
            assert m.relative_position_bias_table.shape[1] == m.num_heads, heads.name
        if getattr(m, "logit_scale", None) is not None:
            assert m.logit_scale.shape[0] == m.cpb_mlp[2].out_features == m.num_heads, heads.name
        if hasattr(m, "attn_dim"):
            assert m.attn_dim == m.num_heads * hd, heads.name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_heads_and_mlp_units_are_cut_consistently_and_rebuild_from_the_plan(name):
    model, example = built(TRANSFORMERS[name]), torch.randn(1, 3, 32, 32)
    graph, plan, dense = cut_kind_first(model, example, "heads")
    kinds = {graph.kind(g) for g in range(len(graph.sizes))}
    assert kinds == {"heads", "channels"}  # the embedding width stays whole by default
    assert any(len(entry["num_heads"]["keep"]) < entry["num_heads"]["size"] for entry in plan["attention"].values())
    assert count_macs(model, example)[0] <= 0.5 * dense
    head_geometry_is_consistent(model)
    x = torch.randn(3, 3, 32, 32)
    plan = json.loads(json.dumps(plan))  # what plan.json holds
    rebuilt = rebuild_pruned(TRANSFORMERS[name]().eval(), plan, model.state_dict())
    head_geometry_is_consistent(rebuilt)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("make", [tv_vit, tv_swin, timm_deit, timm_convnext])
def test_a_pruned_transformer_exports_with_a_dynamic_batch(tmp_path, make):
    """The issue's five at test size (torchvision ViT and Swin; timm's DeiT is the class of its vit_small too;
    ConvNeXt): cut to half the MACs, one ONNX file from the torch.export-based exporter, parity <= 1e-4 of
    the output's magnitude at batch 1 and 3."""
    from catalyst_deploy.exporters.onnx import read_metadata, torch_to_onnx
    from catalyst_deploy.run.check import onnx_parity

    model, example = built(make), torch.randn(1, 3, 32, 32)
    _, _, dense = cut_kind_first(model, example, "heads")
    assert count_macs(model, example)[0] <= 0.5 * dense
    torch_to_onnx(model, example, tmp_path / "cut.onnx")
    assert read_metadata(tmp_path / "cut.onnx")["exporter"] == "dynamo"
    parity = onnx_parity(model, tmp_path / "cut.onnx", example)
    assert set(parity) == {"1", "3"} and max(parity.values()) <= 1e-4, parity


@pytest.mark.parametrize("make", [tv_vit, tv_swin_v2, timm_swin])
def test_removing_a_head_computes_what_zeroing_its_values_does(make):
    """A head whose value rows are zero adds nothing: cutting it must leave every other head as it was
    (the right qkv rows, proj columns and per-head table columns go)."""
    model, example = built(make), torch.randn(1, 3, 32, 32)
    graph = ChannelGraph(model, example)
    g = next(g for g in range(len(graph.sizes)) if graph.kind(g) == "heads")
    heads = graph.heads(g)
    zeroed = copy.deepcopy(model)
    qkv = zeroed.get_submodule(heads.qkv)
    width = heads.num_heads * heads.head_dim
    values = [2 * width + 1 * heads.head_dim + i for i in range(heads.head_dim)]  # head 1's v rows
    with torch.no_grad():
        qkv.weight[values] = 0.0
        if qkv.bias is not None:
            qkv.bias[values] = 0.0
    mask = torch.zeros(graph.num_channels, dtype=torch.bool)
    mask[graph.offsets[g] + 1] = True
    apply_plan(model, graph.plan_for(mask))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), zeroed(x), atol=1e-5), float((model(x) - zeroed(x)).abs().max())


def test_attention_products_are_counted():
    model, example = built(tv_vit), torch.randn(1, 3, 32, 32)
    ChannelGraph(model, example)  # swaps the attention in
    import torch_pruning as tp

    layers_only = tp.utils.count_ops_and_params(model, example)[0]
    tokens, width, layers = 16 + 1, 64, 2  # 4x4 patches and the class token; 4 heads of 16
    assert count_macs(model, example)[0] - layers_only == layers * 2 * tokens * tokens * width


def test_a_module_cut_to_its_last_head_still_counts_its_products():
    """A module left with one head is no longer head-prunable, but it still computes q k^T and attn v: its
    products stay in the count (they once vanished, so the MACs of a cut jumped at the last head)."""
    model, example = built(tv_vit), torch.randn(1, 3, 32, 32)
    graph = ChannelGraph(model, example)
    first = next(g for g in range(len(graph.sizes)) if graph.kind(g) == "heads")
    mask = torch.zeros(graph.num_channels, dtype=torch.bool)
    mask[graph.offsets[first]:graph.offsets[first] + 3] = True  # 3 of its 4 heads
    cut = graph.cut_copy(mask)
    import torch_pruning as tp

    layers_only = tp.utils.count_ops_and_params(cut, example)[0]
    tokens, head = 16 + 1, 16
    assert count_macs(cut, example)[0] - layers_only == 2 * tokens * tokens * (head + 4 * head)


@pytest.mark.parametrize("make", [tv_vit, timm_deit, timm_convnext])
def test_the_embedding_width_is_an_option(make):
    model, example = built(make), torch.randn(1, 3, 32, 32)
    graph = ChannelGraph(copy.deepcopy(model), example)
    assert "embedding" not in {graph.kind(g) for g in range(len(graph.sizes))}
    assert any("--prune-embedding" in reason for reason in graph.left_alone.values())
    reference = copy.deepcopy(model)
    graph, plan, _ = cut_kind_first(model, example, "embedding", target=0.7, prune_embedding=True)
    assert "embedding" in {graph.kind(g) for g in range(len(graph.sizes))}
    assert plan["params"] or make is not tv_vit  # the class token and position embedding are cut with it
    x = torch.randn(3, 3, 32, 32)
    rebuilt = rebuild_pruned(reference, json.loads(json.dumps(plan)), model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_an_unknown_attention_layout_keeps_its_heads():
    class OddAttention(torch.nn.Module):  # reshapes with a constant width: cutting qkv would break it
        def __init__(self):
            super().__init__()
            self.num_heads, self.qkv, self.proj = 2, torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
            return self.proj((q @ k.transpose(-2, -1)).softmax(-1).matmul(v).transpose(1, 2).reshape(*x.shape[:2], 16))

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), OddAttention(), torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 4))
    graph = ChannelGraph(model, torch.randn(1, 5, 8))
    assert "OddAttention" in graph.left_alone["1"]
    assert {graph.root_name(g) for g in range(len(graph.sizes))} == {"0", "2"}  # its input width and the MLP
    cut = graph.cut_copy(torch.ones(graph.num_channels, dtype=torch.bool))
    assert cut[1].qkv.out_features == 48 and cut(torch.randn(2, 5, 8)).shape == (2, 5, 4)


def test_maxvit_attention_is_found_and_left_whole():
    """torchvision's MaxVit names its head count `n_heads`: unseen, its window reshapes sent torch-pruning's
    index maps through every head and the group search ran out of memory (the zoo's maxvit_t record)."""
    from torchvision.models.maxvit import MaxVit

    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                   block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=4).eval()
    heads, left_alone = find_attention(model)
    assert not heads and len(left_alone) == 4  # window and grid attention of both blocks
    assert all("RelativePositionalMultiHeadAttention" in why for why in left_alone.values())
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    keep = torch.ones(graph.num_channels, dtype=torch.bool)
    keep[::2] = False
    x = torch.randn(2, 3, 32, 32)
    assert graph.cut_copy(keep)(x).shape == (2, 4)


FAST = dict(data="demo", train_limit=256, test_limit=128, batch_size=32, steps_per_epoch=3, reg_epochs=2,
            recover_epochs=1, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["catalyst", "catalyst-gated", "l1", "group-lasso", "taylor", "random", "depgraph"])
def test_every_method_prunes_a_vision_transformer(tmp_path, method):
    from catalyst_deploy import api
    from catalyst_deploy.surgery.plan import load_plan

    cfg = api.load_config(model="zoo:tiny_vit", method=method, out=str(tmp_path / method), **FAST)
    report = api.prune(cfg, log=lambda _m: None)
    assert report.macs.ratio <= 0.5
    assert len(report.channels["priority"]) == report.channels["total"]  # one score per head / MLP unit
    out = tmp_path / method
    plan = load_plan(out / "plan.json")
    assert plan["convert"]  # torchvision's attention was swapped for the head-prunable stand-in
    from catalyst_deploy.inputs.zoo import tiny_vit

    rebuilt = rebuild_pruned(tiny_vit(), plan, torch.load(out / "pruned_state.pt", weights_only=True))
    head_geometry_is_consistent(rebuilt)
    from catalyst_deploy.inputs.models import load_model

    pickled = load_model(str(out / "pruned.pt"))  # the allowlist reads the stand-in classes
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pickled(x))


def test_slimming_is_refused_before_training_on_a_model_without_batchnorm(tmp_path):
    from catalyst_deploy import api
    from catalyst_deploy.errors import UsageError

    cfg = api.load_config(model="zoo:tiny_vit", method="slimming", out=str(tmp_path / "s"), **FAST)
    seen = []
    with pytest.raises(UsageError, match="BatchNorm scale.*choose another --method"):
        api.prune(cfg, log=seen.append)
    assert not any(line.startswith("accuracy") for line in seen) and not (tmp_path / "s").exists()
