"""Graph, allocation and plans: the FLOPs target is hit on real torchvision models through the same path
the pipeline takes (graph -> allocation.Budget.select -> plan -> apply_plan), and plans round-trip."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision

from catalyst_deploy.surgery.allocation import Budget, smallest_prefix
from catalyst_deploy.surgery.fitted_macs import coupled_pairs, fit_count
from catalyst_deploy.errors import CatalystDeployError, UsageError
from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.surgery.plan import apply_plan, load_plan, rebuild_pruned, save_plan
from catalyst_deploy.inputs.zoo import small_resnet


def cut_by_norm(model, example, target: float, round_to=8, graph=None, group_weight=None) -> tuple[dict, int]:
    """The pipeline's path with an L2 ranking: (plan, MACs after); `target` a share (<= 1) or MACs."""
    graph = graph or ChannelGraph(model, example)
    dense = count_macs(model, example)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, target * dense if target <= 1 else target, round_to, 0.9,
                    group_weight)
    plan = graph.plan_for(budget.select(-channel_norms(graph.producer_slices(), graph.num_channels)))
    apply_plan(model, plan)
    return plan, count_macs(model, example)[0]

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "efficientnet_b0", "densenet121"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_target_flops_is_hit_and_model_still_runs(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10).eval()
    example = torch.randn(1, 3, 64, 64)
    dense = count_macs(model, example)[0]
    graph = ChannelGraph(model, example)
    plan, after = cut_by_norm(model, example, 0.5, round_to=8, graph=graph)
    assert 0.46 <= after / dense <= 0.50, after / dense
    assert graph.trial_macs(torch.zeros(graph.num_channels, dtype=torch.bool)) == dense
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    # channel counts of every pruned conv honour round_to (where the layer was large enough to round)
    for layer in plan["layers"].values():
        if layer["type"] == "Conv2d" and "out" in layer and layer["out"]["size"] > 8:
            assert len(layer["out"]["keep"]) % 8 == 0


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_plan_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10).eval()
    example = torch.randn(1, 3, 48, 48)
    plan, after = cut_by_norm(model, example, 0.6, round_to=None)
    save_plan(plan, tmp_path / "plan.json")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    rebuilt = rebuild_pruned(torchvision.models.get_model(name, num_classes=10).eval(),
                             load_plan(tmp_path / "plan.json"),
                             torch.load(tmp_path / "state.pt", weights_only=True))
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert json.loads((tmp_path / "plan.json").read_text())["layers"] == plan["layers"]


def test_plan_for_a_different_architecture_is_refused():
    model = small_resnet()
    example = torch.randn(1, 1, 28, 28)
    plan, _ = cut_by_norm(model, example, 0.5)
    with pytest.raises(UsageError, match="channels|does not have"):
        apply_plan(small_resnet(widths=(16, 32, 64)), plan)


def test_head_and_ignored_layers_stay_whole():
    model = small_resnet()
    example = torch.randn(1, 1, 28, 28)
    graph = ChannelGraph(model, example, ignore=["stem"])
    roots = {graph.root_name(g) for g in range(len(graph.groups))}
    assert "fc" not in roots and not any(r.startswith("stem") for r in roots)
    plan, _ = cut_by_norm(model, example, 0.5, graph=graph)
    assert model.fc.out_features == 10
    assert all(not name.startswith("stem.") or "in" in layer and "out" not in layer
               for name, layer in plan["layers"].items())


def test_unknown_ignored_layer_is_a_usage_error():
    with pytest.raises(UsageError, match="did you mean"):
        ChannelGraph(small_resnet(), torch.randn(1, 1, 28, 28), ignore=["stemm"])


def test_unreachable_target_is_a_clear_error():
    model = small_resnet()
    with pytest.raises(CatalystDeployError, match="cannot be reached"):
        cut_by_norm(model, torch.randn(1, 1, 28, 28), 0.001)


def test_absolute_budget_and_channel_norm_ranking():
    torch.manual_seed(0)
    model = small_resnet()
    example = torch.randn(1, 1, 28, 28)
    dense = count_macs(model, example)[0]
    graph = ChannelGraph(copy.deepcopy(model), example)
    plan, after = cut_by_norm(model, example, 0.6 * dense)
    assert after <= 0.6 * dense
    # trial MACs agree with the real cut
    assert graph.trial_macs(torch.zeros(graph.num_channels, dtype=torch.bool)) == dense
    mask = torch.zeros(graph.num_channels, dtype=torch.bool)
    for name, idxs in plan["removed_channels"].items():
        g = next(g for g in range(len(graph.sizes)) if graph.root_name(g) == name)
        mask[graph.offsets[g] + torch.tensor(idxs)] = True
    assert graph.trial_macs(mask) == after


def test_latency_weight_moves_the_cut_to_the_weighted_group():
    torch.manual_seed(0)
    model = small_resnet()
    example = torch.randn(1, 1, 28, 28)
    graph = ChannelGraph(model, example)
    target = 0.8 * count_macs(model, example)[0]
    scores = torch.randn(graph.num_channels)
    plain = Budget(tuple(graph.sizes), graph.trial_macs, target, None, 0.9).select(scores)
    heavy = max(range(len(graph.sizes)), key=lambda g: graph.sizes[g])
    weight = torch.ones(len(graph.sizes))
    weight[heavy] = 100.0
    weighted = Budget(tuple(graph.sizes), graph.trial_macs, target, None, 0.9, weight).select(scores)
    lo, hi = graph.offsets[heavy], graph.offsets[heavy + 1]
    assert weighted[lo:hi].sum() > plain[lo:hi].sum()
    assert graph.trial_macs(weighted) <= target


def test_the_prefix_search_from_a_hint_finds_the_smallest_fitting_prefix_in_a_few_looks():
    """`smallest_prefix` by its definition (the smallest k with fits(k), fits monotone), with and without a hint
    anywhere; from a hint near the answer it looks only a few times (a full binary search over 4096 takes 12)."""
    rng = torch.Generator().manual_seed(0)
    for _ in range(500):
        n = int(torch.randint(1, 4097, (1,), generator=rng))
        answer = int(torch.randint(0, n + 1, (1,), generator=rng))
        for hint in (None, int(torch.randint(-2, n + 3, (1,), generator=rng)), min(n, answer + 1), max(0, answer - 1)):
            looks = []
            assert smallest_prefix(lambda k: looks.append(k) or k >= answer, n, hint) == answer
            if hint is not None and abs(hint - answer) <= 1 and hint < n:
                assert len(looks) <= 4, (n, answer, hint, looks)


def test_a_budgets_prefix_is_the_shortest_cut_by_priority_that_meets_the_target():
    torch.manual_seed(0)
    model = small_resnet()
    example = torch.randn(1, 1, 28, 28)
    graph = ChannelGraph(model, example)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.5 * count_macs(model, example)[0], 8, 0.9)
    priority = torch.randn(graph.num_channels)
    k, cut = budget.prefix(priority)
    order = priority.argsort(descending=True)

    def cut_of(j):
        mask = torch.zeros(graph.num_channels, dtype=torch.bool)
        mask[order[:j]] = True
        return budget.limit(mask, priority, budget.round_to)
    assert torch.equal(cut, cut_of(k)) and graph.trial_macs(cut) <= budget.target_macs
    assert graph.trial_macs(cut_of(k - 1)) > budget.target_macs, "one channel shorter misses the target"
    assert budget.prefix(priority, hint=k + 37)[0] == k and budget.prefix(priority, hint=3)[0] == k


class ConcatNet(torch.nn.Module):
    """Two branches concatenated and read by one conv: a conv whose inputs come from two groups."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.BatchNorm2d(12), torch.nn.ReLU())
        self.b = torch.nn.Sequential(torch.nn.Conv2d(3, 10, 1), torch.nn.BatchNorm2d(10), torch.nn.ReLU())
        self.mix = torch.nn.Sequential(torch.nn.Conv2d(22, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        y = self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(y.mean((2, 3)))


def vit_for_counts():
    return torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                                                num_classes=10)


COUNTED = {"small_resnet": (small_resnet, (1, 1, 28, 28), {}), "concat": (ConcatNet, (1, 3, 16, 16), {}),
           "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (1, 3, 32, 32), {}),
           "vit": (vit_for_counts, (1, 3, 32, 32), {"prune_embedding": True})}


@pytest.mark.parametrize("name", COUNTED)
def test_the_fitted_count_is_the_trial_cuts_count_for_any_cut(name):
    """`fit_count` against its definition: for any cut (random, of any depth, not the ones it was fitted or
    checked on) it gives the MACs a trial cut measures. Residual adds, depthwise convs, a concat read by one conv,
    attention heads and a transformer's embedding width."""
    make, shape, options = COUNTED[name]
    torch.manual_seed(0)
    model = make().eval()
    graph = ChannelGraph(model, torch.randn(*shape), **options)
    count = fit_count(graph.sizes, graph.trial_macs, coupled_pairs(graph), 8, 0.9, unit_width=graph.unit_widths)
    assert count is not None, "the fit disagreed with the trial cuts on its own checks"
    rng = torch.Generator().manual_seed(1)
    for depth in (0.05, 0.3, 0.6, 0.95):
        mask = torch.rand(graph.num_channels, generator=rng) < depth
        mask = Budget(tuple(graph.sizes), graph.trial_macs, 0.0, None, 0.9).limit(mask, torch.rand(graph.num_channels))
        assert count(mask) == graph.trial_macs(mask), depth


def test_a_fit_that_misses_a_product_of_two_groups_is_refused():
    """The fit keeps its count only where it agrees with the oracle: without the pairs of groups that meet in a
    conv (a conv's MACs are inputs times outputs), the products are missing and the fit says so (None)."""
    torch.manual_seed(0)
    model = small_resnet().eval()
    graph = ChannelGraph(model, torch.randn(1, 1, 28, 28))
    own = [(g, g) for g in range(len(graph.sizes))]
    assert fit_count(graph.sizes, graph.trial_macs, own, 8, 0.9) is None
    assert fit_count(graph.sizes, graph.trial_macs, coupled_pairs(graph), 8, 0.9, max_cuts=10) is None, "over its cap"

    def fails_on_two(mask):  # an oracle that cannot cut some probe: no count, and no error for the run
        if int(mask.sum()) == 2:
            raise RuntimeError("this cut breaks the model")
        return graph.trial_macs(mask)
    assert fit_count(graph.sizes, fails_on_two, coupled_pairs(graph), 8, 0.9) is None
