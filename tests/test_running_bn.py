"""Catalyst's setting `running_bn` (methods/running_bn.py): while the method decides, BatchNorm normalises with
its running statistics, so that a sample's gradient does not depend on the batch it came in and data-parallel
ranks, each holding a part of the global batch, compute the gradient one process computes on all of it."""

from __future__ import annotations

import copy

import torch

from catalyst_deploy.inputs.zoo import small_resnet
from catalyst_deploy.methods.running_bn import hold_running_stats
from test_catalyst import started


def gradients(model, x, y, parts: int) -> list[torch.Tensor]:
    """The gradient of the mean loss over `x`, as `parts` ranks with equal shares of the batch average it."""
    model.zero_grad()
    for xs, ys in zip(x.chunk(parts), y.chunk(parts)):
        (torch.nn.functional.cross_entropy(model(xs), ys) / parts).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]  # delta: task_gradient


def largest_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-12)) for u, v in zip(a, b))


def test_with_running_statistics_two_halves_of_a_batch_give_the_whole_batchs_gradient():
    """The property by its definition: the mean of the halves' gradients is the whole batch's gradient. In
    training mode it is not (each half is normalised by its own statistics), which is what the setting removes."""
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).train()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    with torch.no_grad():  # running statistics that are not the batch's (a trained model has its own)
        model(torch.randn(256, 1, 28, 28) * 1.5 + 0.3)
    assert largest_gap(gradients(model, x, y, 2), gradients(model, x, y, 1)) > 1e-2, "premise: batch statistics"
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    release = hold_running_stats(model)
    model.train()  # what the training loop does at the start of a phase: the hold outlasts it
    assert largest_gap(gradients(model, x, y, 2), gradients(model, x, y, 1)) < 1e-5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items()), "the statistics stay as they are"
    release()
    assert all(m.training for m in model.modules()) and all(not m._forward_pre_hooks for m in model.modules())
    model(x)
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in stats.items()), "training mode again"


def test_the_catalyst_holds_the_statistics_during_its_phase_only():
    """Through the method: with the setting, a training step leaves every BatchNorm's statistics unchanged and
    delta's task gradient (what the catalyst decides by) is the same from two halves as from the whole batch;
    `finish` gives the model back in the mode it is in, with no hook left."""
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).train()
    with torch.no_grad():
        model(torch.randn(256, 1, 28, 28) * 1.5 + 0.3)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    twin = copy.deepcopy(model)
    method, _, _ = started(model, bypass="plus", running_bn=True)
    plain, _, _ = started(twin, bypass="plus")
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    deltas = {}
    for name, m, parts in [("whole", method, 1), ("halves", method, 2), ("plain halves", plain, 2),
                           ("plain whole", plain, 1)]:
        gradients(m.graph.model, x, y, parts)
        m.task_gradient()
        deltas[name] = m.delta.grad.clone()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert largest_gap([deltas["halves"]], [deltas["whole"]]) < 1e-5
    assert largest_gap([deltas["plain halves"]], [deltas["plain whole"]]) > 1e-2, "premise: without the setting"
    method.finish(0)
    assert all(m.training for m in model.modules()) and all(not m._forward_pre_hooks for m in model.modules())
