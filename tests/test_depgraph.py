"""The DepGraph baseline is torch-pruning's own algorithm: its sparsity penalty during the phase, and a cut that
removes exactly the channels torch-pruning's progressive global pruning removes on its own."""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp

from catalyst_deploy.inputs.zoo import small_resnet
from catalyst_deploy.methods.depgraph import DepGraphPruner
from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.surgery.plan import apply_plan


def sparse_model() -> torch.nn.Module:
    """A small ResNet whose channel norms differ (random BN scales), so the ranking has something to rank."""
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.05, 1.0)
    return model.eval()


def method_on(model, example, target_share: float) -> DepGraphPruner:
    graph = ChannelGraph(model, example)
    dense = count_macs(model, example)[0]
    method = DepGraphPruner(reg=5e-4, iterative_steps=50)
    method.start(graph, Budget(tuple(graph.sizes), graph.trial_macs, target_share * dense, round_to=None, max_ratio=0.9),
                 steps=10)
    return method


def torch_pruning_alone(model, example, target_share: float) -> torch.nn.Module:
    """torch-pruning's GroupNormPruner driven the way its reproduce/main.py prunes: step until the MACs target."""
    model = copy.deepcopy(model)
    head = model.fc
    pruner = tp.pruner.GroupNormPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2, normalizer="max"), reg=5e-4,
        global_pruning=True, iterative_steps=50, pruning_ratio=1.0, max_pruning_ratio=0.9, ignored_layers=[head])
    base = tp.utils.count_ops_and_params(model, example_inputs=example)[0]
    while tp.utils.count_ops_and_params(model, example_inputs=example)[0] > target_share * base:
        pruner.step()
        if pruner.current_step == pruner.iterative_steps:
            break
    return model


def test_the_priority_is_the_order_in_which_torch_pruning_removes_channels_on_its_own():
    model, example = sparse_model(), torch.randn(1, 1, 28, 28)
    method = method_on(model, example, 0.5)
    priority = method.priority()
    removed = priority >= 1  # every channel torch-pruning's progressive pruning took before reaching the target
    ours = apply_plan(copy.deepcopy(model), method.graph.plan_for(removed))
    theirs = torch_pruning_alone(model, example, 0.5)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for name, value in ours_state.items():  # same shapes and the same surviving channels, in the same order
        torch.testing.assert_close(value, theirs_state[name], msg=name)
    # the shared cut takes a prefix of that order: the fewest of its channels that meet the target (torch-pruning
    # itself overshoots by up to one of its steps)
    mask = method.budget.select(priority)
    assert bool((mask <= removed).all()) and 0 < int(mask.sum()) <= int(removed.sum())
    assert count_macs(apply_plan(copy.deepcopy(model), method.graph.plan_for(mask)), example)[0] \
        <= 0.5 * count_macs(model, example)[0]


def test_the_phase_adds_torch_prunings_penalty_and_trains_without_weight_decay():
    model, example = sparse_model().train(), torch.randn(4, 1, 28, 28)
    method = method_on(model, example[:1], 0.5)
    model(example).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.before_step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.grad, before[n])]
    assert any(n.endswith("conv1.weight") or ".conv" in n for n in changed), changed
    (override,) = method.param_overrides()
    assert override.weight_decay == 0.0 and {id(p) for p in override.params} == {id(p) for p in model.parameters()}
