"""Catalyst's properties (docs/method.md), each measured on real models and the bundled demo data.

P1 sign conservation: under the penalty alone no decision c = d/|s| flips, and s^2 - d^2 shrinks by the
   predicted factor. P2 fair chance: a function-preserving rescale of exactly what Catalyst gates (BN scale
   and shift x k, every consumer's input columns x 1/k) does not change whom it prunes, with every other
   weight training; L1 and group lasso in the same test are fooled. P3 bifurcation: with the task loss on
   and lambda held, the channels split by themselves into s = 0 and d = 0. P4 lossless cut.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.config import load_config
from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.methods import make_method
from catalyst_deploy.methods.catalyst_gated import GatedCatalyst
from catalyst_deploy.methods.fairness import rescale_half, share_pruned_gap
from catalyst_deploy.surgery.plan import apply_plan
from catalyst_deploy.run.train import PhaseSettings, evaluate, make_optimizer, train_phase
from catalyst_deploy.inputs.zoo import fashion_small_resnet, small_resnet, tiny_cnn

EXAMPLE = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
CPU = torch.device("cpu")


def started(model: nn.Module, target: float = 0.5, steps: int = 300,
            **settings) -> tuple[GatedCatalyst, Budget, int]:
    """Catalyst (defaults, or `settings`) started for a phase of `steps` on `model`, at lr 0.02."""
    graph = ChannelGraph(model, EXAMPLE)
    macs = count_macs(model, EXAMPLE)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, target * macs, 8, 0.9)
    method = make_method(load_config(model="zoo:tiny_cnn", lr=0.02, method="catalyst-gated",
                                     catalyst_gated=settings or None))
    method.start(graph, budget, steps)
    return method, budget, macs


class PenaltyOnly:
    """Step hooks that run Catalyst's update without its schedule: lambda held, no freeze."""

    def __init__(self, method: GatedCatalyst):
        self.method = method

    def before_step(self) -> None:
        self.method.before_step()

    def after_step(self, lr: float, step: int) -> None:
        self.method.apply_penalty(lr)

    def status(self) -> dict:
        return {}

    def done(self) -> bool:
        return False


def train_penalty_only(model, method, loader, steps: int):
    train_phase(model, loader, CPU, PhaseSettings(steps, 0.02, schedule="constant"), label="catalyst",
                hooks=PenaltyOnly(method), overrides=method.param_overrides())


@pytest.fixture(scope="module")
def demo_loaders():
    from catalyst_deploy.inputs.data import load_dataset, make_loaders

    return make_loaders(load_dataset("demo"), batch_size=64, seed=0)


# ---- the gates --------------------------------------------------------------------------------------
def test_gates_preserve_the_function_and_fold_exactly():
    torch.manual_seed(0)
    model = small_resnet().eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    method, _, _ = started(model)
    assert torch.equal(model(x), before), "s = 1 everywhere: the model computes what it did"
    with torch.no_grad():
        method.s.data.uniform_(0.0, 1.5)
        method.s.data[:40] = 0.0
    gated = model(x)
    method.fold()
    assert not any(hasattr(m, "parametrizations") and len(m.parametrizations) for m in model.modules())
    torch.testing.assert_close(model(x), gated, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters()), "folded parameters train again"


def test_costs_follow_the_macs_a_channel_saves():
    from catalyst_deploy.methods.gates import channel_costs

    model = small_resnet()
    method, budget, macs = started(model)
    costs = channel_costs(method.graph, budget)
    torch.testing.assert_close(costs.mean(), torch.tensor(1.0))
    graph = method.graph
    saved = [macs - graph.trial_macs(torch.nn.functional.one_hot(torch.tensor(graph.offsets[g]),
                                                                  graph.num_channels).bool())
             for g in range(len(graph.sizes))]
    per_group = [float(costs[graph.offsets[g]]) for g in range(len(graph.sizes))]
    assert sorted(range(len(saved)), key=saved.__getitem__) == sorted(range(len(saved)), key=per_group.__getitem__)


# ---- P1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [0.01, 0.2, 0.9])
@pytest.mark.parametrize("arch", ["tiny_cnn", "small_resnet"])
def test_p1_no_decision_flips_under_the_penalty_alone(arch, step):
    torch.manual_seed(0)
    method, _, _ = started(tiny_cnn() if arch == "tiny_cnn" else small_resnet())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        method.s.data.copy_(torch.exp(0.7 * torch.randn(len(method.d), generator=gen)))
    method.d = torch.exp(0.7 * torch.randn(len(method.d), generator=gen))
    before = method.ratio() > 1
    per_channel = step * method.weights / method.weights.max()  # the property needs eta*lambda*w < 1
    for _ in range(150):
        method.prox(per_channel)
        assert torch.equal(method.ratio() > 1, before)
    c = method.ratio()
    if step >= 0.9:  # ... and they ran away from c = 1, each on its own side
        assert bool((c[before] == float("inf")).all()) and bool((c[~before] == 0).all())


def test_p1_invariant_shrinks_by_the_predicted_factor():
    method, _, _ = started(tiny_cnn())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        method.s.data.copy_(1.0 + 0.3 * torch.rand(len(method.d), generator=gen))
    method.d = 1.0 + 0.3 * torch.rand(len(method.d), generator=gen)
    inv0 = method.s.detach() ** 2 - method.d ** 2
    step = 0.3 * method.weights
    method.prox(step)
    inv1 = method.s.detach() ** 2 - method.d ** 2
    alive = (method.s.detach() > 0) & (method.d > 0)  # clamping at zero ends the exact identity
    torch.testing.assert_close(inv1[alive], (inv0 * (1 - step ** 2))[alive], rtol=1e-4, atol=1e-6)


# ---- P2 ---------------------------------------------------------------------------------------------
def decide(method_name: str, model: nn.Module, loader, steps: int = 140, catalyst: dict | None = None) -> torch.Tensor:
    """The prune set `method_name` decides for half the MACs after `steps` of its phase (shipped defaults, or the
    paper form's `catalyst` settings; group lasso at a strength that moves its weights)."""
    graph = ChannelGraph(model, EXAMPLE)
    macs = count_macs(model, EXAMPLE)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.5 * macs, None, 0.9)
    cfg = load_config(model="zoo:tiny_cnn", method=method_name, lr=0.02, reg_strength=1e-3, catalyst=catalyst)
    method = make_method(cfg)
    method.start(graph, budget, steps)
    used = 0
    if method_name != "l1":
        used = train_phase(model, loader, CPU, PhaseSettings(steps, 0.02, schedule=method.schedule),
                           label=method_name, hooks=method, overrides=method.param_overrides()).steps
    return method.finish(used).mask


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.1, 10.0])
def test_p2_a_rescale_of_what_catalyst_gates_does_not_change_whom_it_prunes(demo_loaders, factor):
    reference = fashion_small_resnet().eval()
    x = next(iter(demo_loaders[1]))[0][:32]
    gaps = {}
    for name in ("catalyst-gated", "l1", "group-lasso"):
        torch.manual_seed(0)
        model = copy.deepcopy(reference)
        code = rescale_half(model, EXAMPLE, factor, seed=3)
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-4, atol=1e-4)  # function-preserving
        gaps[name] = share_pruned_gap(decide(name, model, demo_loaders[0]), code)
    assert abs(gaps["catalyst-gated"]) <= 8.0, gaps  # measured: -2.7 (k = 0.1), +2.2 (k = 10)
    assert abs(gaps["l1"]) >= 30.0 and abs(gaps["group-lasso"]) >= 30.0, gaps  # magnitude methods are fooled


def rescale_drift(demo_loaders, invariant: bool, factor: float = 10.0, steps: int = 3) -> tuple[float, float]:
    """Train a model and its function-preserving rescale (fairness.rescale_half) side by side on the same
    batches with fast gates; afterwards, the largest output difference relative to the output's size, and
    the largest difference of the catalyst variables d."""
    torch.manual_seed(0)
    reference = fashion_small_resnet()
    rescaled = copy.deepcopy(reference)
    rescale_half(rescaled, EXAMPLE, factor, seed=3)
    batches = [b for _, b in zip(range(steps), demo_loaders[0])]
    runs = []
    for model in (reference, rescaled):
        model.train()
        method, _, _ = started(model, gate_lr=20.0, invariant=invariant)
        method.set_lambda(1.0, 0)
        optimizer = make_optimizer(model, PhaseSettings(steps, 0.02), method.param_overrides())
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            method.before_step()
            optimizer.step()
            method.apply_penalty(0.02)
        runs.append((model.eval(), method))
    x = batches[0][0]
    with torch.no_grad():
        a, b = runs[0][0](x), runs[1][0](x)
    return float((a - b).abs().max() / a.abs().max()), float((runs[0][1].d - runs[1][1].d).abs().max())


@pytest.mark.slow
def test_the_invariant_update_commutes_with_a_function_preserving_rescale(demo_loaders):
    """Definition of the invariant update: training a rescaled copy gives the rescaled copy of the trained
    model, so it computes the same function after the steps. Plain SGD (the control) does not."""
    output, decisions = rescale_drift(demo_loaders, invariant=True)
    assert output < 1e-4 and decisions < 1e-4, (output, decisions)  # measured: 3e-7, 0
    output, _ = rescale_drift(demo_loaders, invariant=False)
    assert output > 1e-2, output  # the same check fails without it (measured: 9.4)


# ---- P3 and P4 --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_p3_with_lambda_held_the_task_loss_splits_the_channels_by_itself(demo_loaders):
    """No controller and no freeze: lambda is held, the task loss trains. Channels must end at s = 0 or
    d = 0 by the dynamics alone, on both sides in numbers (not all pruned, not all kept)."""
    torch.manual_seed(0)
    model = fashion_small_resnet()
    method, _, _ = started(model)
    method.set_lambda(0.02 / 0.02, 0)
    train_penalty_only(model, method, demo_loaders[0], 500)
    collapsed, kept = method.s.detach() == 0, method.d == 0
    decided = float((collapsed | kept).float().mean())
    assert decided >= 0.85, decided  # measured: 0.88 after 400 steps, still rising
    assert collapsed.float().mean() >= 0.2 and kept.float().mean() >= 0.2


@pytest.mark.slow
def test_p3_p4_the_shipped_schedule_prunes_what_the_dynamics_zeroed_and_the_cut_is_lossless(demo_loaders):
    torch.manual_seed(0)
    model = fashion_small_resnet()
    steps = 300
    method, budget, macs = started(model, steps=steps)
    train_phase(model, demo_loaders[0], CPU, PhaseSettings(steps, 0.02, schedule=method.schedule), label="catalyst",
                hooks=method, overrides=method.param_overrides())
    split = method.controller.split
    assert split is not None and not split.forced, "the collapsed set reached the target by itself"
    assert split.collapsed >= 0.8 * int(method.frozen.sum()), "the prune set is what the dynamics zeroed"
    assert method.settled(), "the few channels added at the freeze reached s = 0 before the phase ended"
    method.fold()
    model.eval()
    x = next(iter(demo_loaders[1]))[0]
    with torch.no_grad():
        before = model(x)
        accuracy = evaluate(model, demo_loaders[1], CPU)
        apply_plan(model, method.graph.plan_for(method.frozen.cpu()))
        after = model(x)
    assert count_macs(model, EXAMPLE)[0] <= 0.5 * macs
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))  # P4
    assert evaluate(model, demo_loaders[1], CPU) == accuracy


def test_priority_puts_collapsed_channels_first_in_collapse_order():
    method, _, _ = started(tiny_cnn())
    n = len(method.d)
    with torch.no_grad():
        method.s.data.copy_(torch.linspace(0.5, 1.5, n))
    method.d = torch.linspace(1.5, 0.5, n)
    for _ in range(40):
        method.steps += 1
        method.prox(torch.full_like(method.d, 0.05))
    collapsed = method.s.detach() == 0
    assert collapsed.any() and (~collapsed).any()
    priority = method.priority()
    assert priority[collapsed].min() > priority[~collapsed].max()
    first, last = method.collapsed_at[collapsed].argmin(), method.collapsed_at[collapsed].argmax()
    assert priority[collapsed][first] >= priority[collapsed][last]


def test_state_dict_is_plain_and_round_trips_through_a_weights_only_load(tmp_path):
    """The method's checkpoint state (controller included, after the freeze too) loads with
    torch.load(weights_only=True), which refuses any class outside plain containers and tensors, and
    restores the same state."""
    method, _, _ = started(tiny_cnn())
    method.set_lambda(3.0, 1)
    method.prox(torch.full_like(method.d, 0.1))
    for step in range(1, 11):
        method.after_step(0.02, step)
    method.controller.freeze(10, forced=True)
    torch.save(method.state_dict(), tmp_path / "method.pt")
    state = torch.load(tmp_path / "method.pt", weights_only=True)
    other, _, _ = started(tiny_cnn())
    other.load_state_dict(state)
    assert torch.equal(other.d, method.d) and other.lam == method.lam and other.history == method.history
    assert torch.equal(other.frozen, method.frozen) and other.frozen_step == method.frozen_step
    ours, theirs = method.controller, other.controller
    assert theirs.split == ours.split and theirs.trace == ours.trace and len(ours.trace) == 2
