"""Catalyst in the paper's form (methods/catalyst.py): the properties it is defined by, each built from its
definition, not from what the implementation does.

P1  under the penalty alone a channel at c = 1 stays there, and one off the boundary runs away from it
    geometrically (delta^2 - ||F||^2 shrinks by exactly 1 - step^2 per step);
P2  a function-preserving rescale of half of each group's channels, made before the catalyst is set up, does
    not change the share of them that is pruned (every weight training), while L1 is fooled by it;
P3  the split is made by the dynamics: with a schedule long enough, the prune set is taken without forcing,
    with a positive margin in log c and at least 80% of it at F = 0 before anything is forced;
P4  the cut of that set is lossless.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from catalyst_deploy.config import load_config
from catalyst_deploy.inputs.zoo import fashion_small_resnet, small_resnet
from catalyst_deploy.methods import make_method
from catalyst_deploy.methods.catalyst import LITERAL, CatalystRegularizer
from catalyst_deploy.methods.fairness import rescale_half, share_pruned_gap
from catalyst_deploy.run.train import PhaseSettings, evaluate, train_phase
from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.surgery.plan import apply_plan
from test_catalyst_gated import decide  # the prune set a method decides after a short phase (shared P2 helper)

EXAMPLE = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
CPU = torch.device("cpu")


def started(model: nn.Module, target: float = 0.5, steps: int = 300, method: str = "catalyst",
            **settings) -> tuple[CatalystRegularizer, Budget, int]:
    graph = ChannelGraph(model, EXAMPLE)
    macs = count_macs(model, EXAMPLE)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, target * macs, None, 0.9)
    paper = {**LITERAL, **settings} if method == "catalyst" else None  # the properties of the literal form
    m = make_method(load_config(model="zoo:tiny_cnn", lr=0.02, method=method, catalyst=paper))
    m.start(graph, budget, steps)
    return m, budget, macs


@pytest.fixture(scope="module")
def demo_loaders():
    from catalyst_deploy.inputs.data import load_dataset, make_loaders

    return make_loaders(load_dataset("demo"), 64, seed=0)


def test_the_catalyst_changes_nothing_the_model_computes_and_leaves_no_trace():
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    keys, attributes = set(model.state_dict()), set(vars(model))
    method, _, _ = started(model, bypass="minus")
    assert torch.equal(model(x), before)
    out = model.train()(x)
    out.sum().backward()
    method.task_gradient()
    assert method.delta.grad is not None and method.delta.grad.abs().sum() > 0, "the task reaches delta"
    method.finish(0)
    assert set(model.state_dict()) == keys and not model._forward_hooks
    assert set(vars(model)) == attributes  # a saved model pickles its attributes: a resumed run saves the same bytes
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("bypass", ["plus", "minus"])
def test_the_catalyst_term_gives_delta_the_gradient_of_scaling_its_channels_value(bypass):
    """By its definition (each output y of channel j becomes y + s * (delta_j - sg(delta_j)) * y), delta_j's task
    gradient is s * dL/de_j, e_j a factor on channel j's value wherever it is produced. Measured apart from the
    method: forward hooks scale the outputs of a plain copy's BatchNorms by e = 1, and autograd gives dL/de."""
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).train()
    with torch.no_grad():  # shifts too (they start at 0): the term is on both of a BN's parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(model)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    method, _, _ = started(model, bypass=bypass)
    nn.functional.cross_entropy(model(x), y).backward()
    method.task_gradient()
    graph = ChannelGraph(reference, EXAMPLE)
    e = torch.ones(graph.num_channels, requires_grad=True)
    owners = {id(p): m for m in reference.modules() for p in m.parameters(recurse=False)}
    producers = {id(owners[id(sl.param)]): (owners[id(sl.param)], sl.pos, sl.chan)
                 for sl in graph.producer_slices(skip_normalized=True)}
    assert all(isinstance(m, nn.BatchNorm2d) for m, _, _ in producers.values())

    def scaled(pos, chan):
        return lambda _m, _i, out: out * torch.ones(out.shape[1]).index_copy(0, pos, e[chan]).view(1, -1, 1, 1)
    for module, pos, chan in producers.values():
        module.register_forward_hook(scaled(pos, chan))
    nn.functional.cross_entropy(reference(x), y).backward()
    assert float(e.grad.abs().min()) > 0, "every channel's value reaches the loss"
    torch.testing.assert_close(method.delta.grad, (1.0 if bypass == "plus" else -1.0) * e.grad, rtol=1e-4, atol=1e-7)


def test_the_catalyst_term_reaches_every_channel_of_a_transformer():
    """Attention heads and MLP units (channels along the last dimension, several groups in one projection):
    every delta gets s * sum(theta * dL/dtheta) over the parameters that set its channel's value (y is linear in
    them), computed from a plain copy's gradients."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5).train()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: no gradient would flow
    reference, x = copy.deepcopy(model), torch.randn(3, 3, 32, 32)
    graph = ChannelGraph(model, x[:1])
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.7 * count_macs(model, x[:1])[0], None, 0.9)
    cfg = load_config(model="zoo:tiny_cnn", method="catalyst", catalyst={**LITERAL, "bypass": "plus"})
    method = make_method(cfg)
    method.start(graph, budget, 100)
    ref_graph, expected = ChannelGraph(reference, x[:1]), torch.zeros(graph.num_channels)  # as the method's copy
    nn.functional.cross_entropy(model(x), torch.arange(3)).backward()
    method.task_gradient()
    nn.functional.cross_entropy(reference(x), torch.arange(3)).backward()
    for sl in ref_graph.producer_slices(skip_normalized=True):
        other = [d for d in range(sl.param.dim()) if d != sl.dim]
        per_pos = (sl.param * sl.param.grad).detach() if sl.param.grad is not None else torch.zeros_like(sl.param)
        expected.index_add_(0, sl.chan, (per_pos.sum(dim=other) if other else per_pos)[sl.pos])
    assert len(graph.sizes) == 4 and float(expected.abs().min()) > 0
    torch.testing.assert_close(method.delta.grad, expected, rtol=1e-4, atol=1e-7)


# ---- P1 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["bn", "group"])
def test_p1_under_the_penalty_alone_c_stays_at_one_and_runs_away_from_anywhere_else(placement):
    torch.manual_seed(1)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16))
    with torch.no_grad():  # random magnitudes, so that nothing is decided by the channels all being alike
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 3.0)
                m.bias.uniform_(-1.0, 1.0)
    method, _, _ = started(model, placement=placement)
    norm0 = method.F.norms()
    c0 = torch.ones_like(norm0)
    c0[0::3], c0[1::3] = 0.9, 1.1  # a third below, a third above, a third on the boundary
    with torch.no_grad():
        method.delta.data.copy_(c0 * norm0)
    step = 0.01
    on, above, below = c0 == 1.0, c0 > 1.0, c0 < 1.0
    inv0 = method.delta.detach() ** 2 - norm0 ** 2
    for _ in range(20):
        method.prox(torch.full_like(norm0, step))
    norms, d = method.F.norms(), method.delta.detach()
    assert bool(((norms > 0) & (d > 0)).all()), "nothing reaches zero in 20 steps of 0.01"
    scale = norm0[~on] ** 2  # the invariant relative to each channel's size (float32 round-off)
    torch.testing.assert_close((d ** 2 - norms ** 2)[~on] / scale, (inv0 * (1 - step ** 2) ** 20)[~on] / scale,
                               rtol=1e-3, atol=1e-5)
    for _ in range(180):
        method.prox(torch.full_like(norm0, step))
    log_c = method.log_ratio()
    assert log_c[on].abs().max() < 1e-4, "c = 1 stays at 1: the penalty alone decides nothing"
    # away from the boundary the departure grows: log c at least 5x its start after 200 steps of 0.01
    assert bool((log_c[above] > 5 * math.log(1.1)).all()) and bool((log_c[below] < 5 * math.log(0.9)).all())


# ---- P2 ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.1, 10.0])
def test_p2_a_rescale_made_before_the_catalyst_does_not_change_whom_it_prunes(demo_loaders, factor):
    reference = fashion_small_resnet().eval()
    x = next(iter(demo_loaders[1]))[0][:32]
    gaps, masks = {}, {}
    for name, k in (("catalyst", 1.0), ("catalyst", factor), ("l1", factor)):
        torch.manual_seed(0)
        model = copy.deepcopy(reference)
        code = rescale_half(model, EXAMPLE, k, seed=3)  # the same half of the channels for every k
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-4, atol=1e-4)  # function-preserving
        masks[name, k] = decide(name, model.train(), demo_loaders[0], catalyst=LITERAL if name == "catalyst" else None)
        gaps[name, k] = share_pruned_gap(masks[name, k], code)
    # an update that commutes with the rescale trains the rescaled model into the rescaled copy of the same
    # model: the same channels are pruned (float round-off aside), and the share of the rescaled half with them
    # (one channel is 0.9 points here). With the step scale taken from the weights (a group's mean ||F0||^2)
    # the sets overlapped 0.66 / 0.25 and the pruned counts were 116 / 71 against 106.
    a, b = masks["catalyst", 1.0], masks["catalyst", factor]
    assert float((a & b).sum() / (a | b).sum()) >= 0.8, float((a & b).sum() / (a | b).sum())
    assert abs(gaps["catalyst", factor] - gaps["catalyst", 1.0]) <= 8.0, gaps
    assert abs(gaps["l1", factor]) >= 30.0, gaps  # a magnitude ranking is fooled by the same rescale


REWIND = dict(bypass="plus", center=True, center_groups=True, pressure=0.0, deadline=0.5, cost_aware=False,
              rewind=True)  # the default (docs/method.md, "Which form is the default"), named in full


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.1, 10.0])
def test_p2_the_rewind_setting_prunes_rescaled_and_untouched_channels_alike(demo_loaders, factor):
    """P2 by its definition (the share of the rescaled half that is pruned) for the setting that forces its
    freeze and ranks by centred log c: the rescale must not move that share."""
    reference = fashion_small_resnet().eval()
    gaps = {}
    for k in (1.0, factor):
        torch.manual_seed(0)
        model = copy.deepcopy(reference)
        code = rescale_half(model, EXAMPLE, k, seed=3)
        method, _, _ = started(model.train(), steps=140, **REWIND)
        used = train_phase(model, demo_loaders[0], CPU, PhaseSettings(140, 0.02, schedule=method.schedule),
                           label="catalyst", hooks=method, overrides=method.param_overrides()).steps
        gaps[k] = share_pruned_gap(method.finish(used).mask, code)
    assert abs(gaps[factor] - gaps[1.0]) <= 8.0, gaps  # measured: +0.45 (k = 0.1), +0.45 (k = 10); deadline 0.25: 0.0, +0.9


# ---- P3, P4 ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_p3_p4_the_dynamics_make_the_split_and_the_cut_is_lossless(demo_loaders):
    torch.manual_seed(0)
    model = fashion_small_resnet()
    steps = 280
    method, budget, macs = started(model, steps=steps, strength=6.0, step_cap=0.05, pressure=0.05)
    used = train_phase(model, demo_loaders[0], CPU, PhaseSettings(steps, 0.02, schedule=method.schedule),
                       label="catalyst", hooks=method, overrides=method.param_overrides()).steps
    split = method.plan.split
    assert split is not None and not split["forced"], "the collapsed set reached the target by itself"
    assert split["margin"] > 0, split["margin"]
    pruned = int(method.plan.mask.sum())
    assert split["prune_set_at_zero"] >= 0.8 * pruned, (split["prune_set_at_zero"], pruned)
    assert used < steps and method.done(), "the frozen set reached F = 0 and the phase ended early"
    decision = method.finish(used)
    model.eval()
    x = next(iter(demo_loaders[1]))[0]
    with torch.no_grad():
        before = model(x)
        accuracy = evaluate(model, demo_loaders[1], CPU)
        apply_plan(model, method.graph.plan_for(decision.mask))
        after = model(x)
    assert count_macs(model, EXAMPLE)[0] <= 0.5 * macs
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert evaluate(model, demo_loaders[1], CPU) == accuracy


def test_the_margin_is_taken_against_live_kept_channels():
    """A channel at F = 0 that the --round-to blocks gave back is dead on either side (log c = +inf): the margin
    compares the prune set with the live channels kept, and the dead one counts in given_back."""
    from catalyst_deploy.methods.catalyst_schedule import split_record

    norms = torch.tensor([0.0, 0.0, 1e-3, 0.5, 1.0])
    delta = torch.tensor([0.5, 0.2, 0.3, 1e-4, 0.0])
    log_c = torch.log(delta / norms)  # +inf, +inf, log 300, log 2e-4, -inf
    mask = torch.tensor([True, False, True, False, False])
    split = split_record(10, False, mask, log_c, norms, delta)
    assert split["given_back"] == 1 and split["collapsed"] == 2
    assert split["margin"] == pytest.approx(math.log(300) - math.log(2e-4), rel=1e-5)


def test_center_puts_the_targets_boundary_at_c_one_and_changes_nothing_else():
    """`center` scales every undecided delta by one factor: log c moves by one constant (the order the dynamics
    made is kept), as many channels are at c > 1 as the target takes by descending c, decided
    channels (F = 0, delta = 0) stay where they are, and neither F nor what the model computes changes."""
    torch.manual_seed(2)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    method, budget, _ = started(model, target=0.5, bypass="plus", center=True, pressure=0.0)
    norm0 = method.F.norms()
    log_c0 = torch.rand(len(norm0), generator=torch.Generator().manual_seed(3)) + 0.3  # all above 1
    with torch.no_grad():
        method.delta.data.copy_(norm0 * log_c0.exp())
        method.delta.data[1] = 0.0  # decided: kept
    method.plan.center()
    log_c = method.log_ratio()
    live = torch.isfinite(log_c)
    assert bool(torch.isneginf(log_c[1])) and int(live.sum()) == len(norm0) - 1
    shift = log_c0[live] - log_c[live]
    assert float(shift.min()) > 0.3 and float(shift.max() - shift.min()) < 1e-5, "one common shift"
    _, prefix = budget.prefix(log_c.clamp(-1e3, 1e3))  # the shortest prefix by descending c that meets the target
    assert int((log_c > 0).sum()) == int(prefix.sum()), "as many at c > 1 as the target's shortest prefix takes"
    chosen = budget.select(log_c.clamp(-1e3, 1e3), candidates=log_c > 0)  # what a freeze now would cut
    assert budget.macs_of(chosen) <= budget.target_macs and bool((chosen <= (log_c > 0)).all())
    assert torch.equal(method.F.norms(), norm0) and torch.equal(model.eval()(x), before)
    assert method.plan.report()["center_shift"] == pytest.approx(float(shift.mean()), rel=1e-4)


def test_center_groups_puts_each_groups_mean_log_c_at_zero_and_keeps_its_order():
    """`center_groups` scales each group's undecided delta by one factor of its own: afterwards every group's
    live channels have mean log c 0 (from groups drawn at different levels), the order inside each group is
    the one the dynamics made, and the common shift that follows still puts the target's set at c > 1."""
    torch.manual_seed(2)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)).eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    method, budget, _ = started(model, target=0.5, bypass="plus", center=True, center_groups=True, pressure=0.0)
    norm0 = method.F.norms()
    sizes = list(budget.sizes)
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    level = torch.linspace(-3.0, 3.0, len(sizes))[group]  # each group drifted as a whole
    log_c0 = level + torch.rand(len(norm0), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        method.delta.data.copy_(norm0 * log_c0.exp())
    method.plan.center()
    log_c = method.log_ratio()
    for g in range(len(sizes)):
        inside = group == g
        gaps = log_c0[inside] - log_c[inside]
        assert float(gaps.max() - gaps.min()) < 1e-4, f"group {g}: one factor per group, the order kept"
    means = torch.stack([log_c[group == g].mean() for g in range(len(sizes))])
    assert float(means.max() - means.min()) < 1e-4, "the groups' means level"
    assert int((log_c > 0).sum()) == int(budget.prefix(log_c.clamp(-1e3, 1e3))[1].sum())
    above = torch.stack([(log_c[group == g] > 0).float().mean() for g in range(len(sizes))])
    assert float(above.min()) > 0.0, "no group is left wholly below the boundary by its level"
    assert torch.equal(method.F.norms(), norm0) and torch.equal(model.eval()(x), before)


def test_rewind_cuts_the_set_from_the_weights_the_phase_started_with(demo_loaders):
    """Setting `rewind`: at a forced freeze the model gets back every weight and buffer it had when the phase
    started; only the prune set's F is zeroed. Without it the cut is of the model the phase left."""
    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16))
    start = copy.deepcopy(model.state_dict())
    method, _, _ = started(model, target=0.5, steps=40, bypass="plus", rewind=True, strength=8.0)
    norm0 = method.F.norms().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step, (x, y) in zip(range(1, 21), demo_loaders[0]):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.before_step()
        optimizer.step()
        method.after_step(0.05, step)
    changed = [k for k, v in model.state_dict().items() if k in start and not torch.equal(v, start[k])]
    assert changed, "the phase moved the weights"
    decision = method.finish(20)
    assert method.plan.split["forced"] and method.report()["rewound"]
    in_f = {id(p) for p in method.F.params}
    for name, p in model.named_parameters():
        if id(p) not in in_f:
            assert torch.equal(p, start[name]), name
    for name, b in model.named_buffers():
        if name in start:
            assert torch.equal(b, start[name]), name
    norms = method.F.norms()
    assert torch.equal(norms[~decision.mask], norm0[~decision.mask]), "kept channels: their F as it started"
    assert decision.mask.any() and bool((norms[decision.mask] == 0).all()), "the prune set: F = 0, a lossless cut"


@pytest.mark.parametrize("window, frozen_at", [(1.0, 5), (2.0, 10), (0.0, 15)])
def test_the_freeze_comes_after_window_epochs_passes_over_the_data_at_the_latest(tmp_path, window, frozen_at):
    """`window_epochs` counts passes over the training data (5 steps here), whatever the phase's length: a
    30-step phase with the deadline at half of it freezes at step 15 without a window, at 5 and 10 with one
    and two epochs. Through the pipeline: the runner tells the method how long an epoch is."""
    from catalyst_deploy import api

    cfg = api.load_config(model="zoo:tiny_cnn", out=str(tmp_path / "w"), data="demo", train_limit=512,
                          test_limit=128, batch_size=64, steps_per_epoch=5, reg_epochs=6, recover_epochs=0.2,
                          device="cpu", lr=0.02, method="catalyst",
                          catalyst={"deadline": 0.5, "window_epochs": window, "check_every": 1})
    split = api.prune(cfg, log=lambda _m: None).method["split"]
    assert split["forced"] and split["step"] == frozen_at, split


def test_a_resumed_run_rewinds_to_the_weights_the_interrupted_one_started_with():
    """A checkpoint carries the start weights of `rewind` (a resumed run starts from trained weights, which are
    not the ones to give back); one made without them is refused with a message."""
    from catalyst_deploy.errors import CatalystDeployError

    torch.manual_seed(0)
    model = small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16))
    start = copy.deepcopy(model.state_dict())
    first, _, _ = started(model, steps=40, bypass="plus", rewind=True)
    state = first.state_dict()
    first.detach_from_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # the weights the interrupted run had trained to
    resumed, _, _ = started(model, steps=40, bypass="plus", rewind=True)
    resumed.load_state_dict(state)
    resumed.finish(0)
    for name, value in model.state_dict().items():  # the start weights, but for the prune set's zeros
        assert torch.equal(torch.where(value != 0, value, start[name]), start[name]), name
    def fresh():  # another run of the same architecture
        return started(small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)), steps=40, bypass="plus",
                       rewind=True)[0]

    with pytest.raises(CatalystDeployError, match="start weights"):
        fresh().load_state_dict({k: v for k, v in state.items() if k != "start_weights"})
    forged = {**state, "start_weights": {**state["start_weights"], "stem.0.weight": torch.zeros(3)}}
    with pytest.raises(CatalystDeployError, match="do not fit this model"):
        fresh().load_state_dict(forged)


def test_the_gated_forms_margin_is_taken_against_live_kept_channels_too():
    """The gated form's split record: a gate at s = 0 that the blocks gave back is dead, not a kept channel."""
    torch.manual_seed(0)
    method, _, _ = started(small_resnet(in_channels=1, num_classes=10, widths=(8, 16, 16)), method="catalyst-gated")
    n = len(method.d)
    with torch.no_grad():
        method.s.fill_(1.0)
        method.d.fill_(1.0)
        method.d[: n // 2] = 100.0  # log c = log 100 on the prune set
        method.d[n // 2:] = 0.01  # log c = log 0.01 on the live kept channels
        method.s[n - 1] = 0.0  # collapsed, given back: log c = +inf
    mask = torch.arange(n) < n // 2
    split = method.controller._split(0, False, mask)
    assert split.given_back == 1 and split.collapsed == 1
    assert split.margin == pytest.approx(math.log(100) - math.log(0.01), rel=1e-4)
