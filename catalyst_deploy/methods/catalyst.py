"""Catalyst as the paper defines it (Jung & Lee, "Catalyst: a Novel Regularizer for Structured Pruning with
Auxiliary Extension of Parameter Space", ICML 2025 HiLD workshop); docs/method.md explains every choice.

For every prunable channel j (a channel of one of the dependency graph's coupled groups), F_j is what produces
it: its BatchNorm scale and shift (placement "bn", the paper's "Ours-BN"), or every producer slice of the
group, conv/linear rows, biases and norm parameters of all the coupled producers ("group", "Ours-group"), in
one norm ||F_j||. The catalyst delta_j starts at ||F_j||, so every channel starts exactly on the decision
boundary c = delta/||F|| = 1, and sits in the forward pass: each producer's output y of channel j becomes

    y + s * (delta_j - sg(delta_j)) * y          (sg: value-only copy; s = -1 "minus", +1 "plus")

which changes no value (the model computes what it did) and lets the task loss reach delta_j: its gradient is
s * sum(y * dL/dy). y is linear in the parameters theta that set it (a BN's scale and shift, or the rows and bias
of a conv or linear no BN follows), so that sum is s * sum(theta * dL/dtheta) over them, and since the term
changes no value, dL/dtheta is the gradient backward gives theta anyway: `task_gradient` takes it from there,
so the term costs the forward and backward passes nothing and the model carries no hook. The penalty is

    lambda * sum_j w_j * delta_j * ||F_j||        (w_j: the MACs removing channel j saves, mean 1)

whose zero set {delta = 0 or F = 0} is the set of lossless prunings. After every optimizer step both sides
take the same proximal step (exact zeros):

    F_j <- F_j * max(0, 1 - eta*lambda*w_j*delta_j/||F_j||)      delta_j <- max(0, delta_j - eta*lambda*w_j*||F_j||)

Under this step alone delta^2 - ||F||^2 is multiplied by (1 - (eta*lambda*w)^2): c = 1 stays at 1, and a
channel off the boundary runs away from it (c -> inf: F = 0, pruned; c -> 0: delta = 0, kept), so the penalty
alone decides nothing; the task breaks the tie. The schedule (`CatalystSchedule`) ramps lambda and a small
relative decay of F (the prune pressure), freezes the prune set once the channels at c >= c_hi cover the target
(the channels the dynamics put at c > 1, by descending c), drives it to zero and ends the phase: a lossless cut.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from catalyst_deploy.method_table import LITERAL  # the literal reading's settings (re-exported: benchmarks and tests use it)
from catalyst_deploy.errors import CatalystDeployError
from catalyst_deploy.methods.base import Decision, ParamOverride, PruningMethod, leave_out_of_ddp

if TYPE_CHECKING:
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph

BYPASS_SIGN = {"minus": -1.0, "plus": 1.0, "none": 0.0}
__all__ = ["LITERAL", "CatalystRegularizer", "CatalystVariables", "ChannelNorms"]


class CatalystVariables(nn.Module):
    """The catalyst delta (one per global channel), attached to the model during the phase only, so that the
    optimizer and checkpoints see it; a buffer when no task gradient reaches it (bypass "none"). DDP leaves
    it alone: its gradient (`task_gradient`) comes from gradients DDP has averaged, the same on every rank."""

    def __init__(self, delta: torch.Tensor, trainable: bool):
        super().__init__()
        if trainable:
            self.delta = nn.Parameter(delta)
        else:
            self.register_buffer("delta", delta)


class ChannelNorms:
    """The producer slices F of every channel and the fused operations on them: norms, scaling, gradients."""

    def __init__(self, graph: ChannelGraph, placement: str):
        self.num = graph.num_channels
        self.slices = graph.producer_slices(skip_normalized=(placement == "bn"))
        self.params = list({id(sl.param): sl.param for sl in self.slices}.values())

    def norms(self) -> torch.Tensor:
        sq = None
        with torch.no_grad():
            for sl in self.slices:
                other = [d for d in range(sl.param.dim()) if d != sl.dim]
                per_pos = sl.param.detach().float().pow(2)
                per_pos = per_pos.sum(dim=other) if other else per_pos
                if sq is None:
                    sq = torch.zeros(self.num, device=per_pos.device)
                sq.index_add_(0, sl.chan, per_pos[sl.pos])
        return sq.sqrt()

    def expected_sq(self, device) -> torch.Tensor:
        """A channel's squared norm at a standard initialisation, from the shapes alone (1 per BatchNorm-like
        vector, 2 per weight row, the Kaiming expectation): a step scale that no rescale of a channel moves."""
        out = torch.zeros(self.num, device=device)
        for sl in self.slices:
            out.index_add_(0, sl.chan, torch.full((len(sl.chan),), 1.0 if sl.param.dim() == 1 else 2.0,
                                                  device=device))
        return out.clamp_min(1.0)

    def scale_(self, factor: torch.Tensor, grad: bool = False) -> None:
        """Multiply every channel's slices (or their gradients) by `factor` (one per channel)."""
        with torch.no_grad():
            for sl in self.slices:
                target = sl.param.grad if grad else sl.param.data
                if target is None:
                    continue
                per_pos = torch.ones(sl.param.shape[sl.dim], device=target.device, dtype=target.dtype)
                per_pos[sl.pos] = factor[sl.chan].to(target.dtype)
                shape = [1] * target.dim()
                shape[sl.dim] = -1
                target.mul_(per_pos.view(shape))


class CatalystRegularizer(PruningMethod):
    """The paper's Catalyst: the catalyst in the forward pass, c0 = 1, the penalty on the filters themselves."""

    schedule = "constant"  # step sizes are per optimizer step; the frozen set must still reach zero at the end
    synchronised = True  # delta and F follow the DDP-averaged gradients: every rank decides the same

    def __init__(self, settings, base_lr: float):
        self.settings, self.base_lr = settings, base_lr
        self.term: list = []  # the producer slices that set each channel's value (task_gradient)
        self.variables: CatalystVariables | None = None
        self.start_weights: dict | None = None
        self.rewound = False
        self.undo: list = []  # what `start` did to the model (DDP's ignore list, running_bn), undone at detach

    @classmethod
    def from_config(cls, cfg) -> CatalystRegularizer:
        return cls(cfg.catalyst, cfg.lr)

    # ---- set-up and tear-down -----------------------------------------------------------------------
    def start(self, graph: ChannelGraph, budget: Budget, steps: int) -> None:
        from catalyst_deploy.methods.gates import channel_costs
        from catalyst_deploy.methods.invariance import column_positions
        from catalyst_deploy.methods.catalyst_schedule import CatalystSchedule
        from catalyst_deploy.methods.running_bn import hold_running_stats

        super().start(graph, budget, steps)
        s = self.settings
        # setting `rewind`: the weights the phase starts from, given back to the model at a forced freeze
        self.start_weights = ({k: v.detach().clone() for k, v in graph.model.state_dict().items()}
                              if s.rewind else None)
        self.F = ChannelNorms(graph, s.placement)
        device = self.F.params[0].device
        norm0 = self.F.norms()
        # the scale of the preconditioned task step (see before_step), from the shapes alone: a value taken
        # from the weights (a group's mean ||F0||^2, say) would move with a rescale of some of its channels
        self.unit = self.F.expected_sq(device)
        self.weights = (channel_costs(graph, budget) if s.cost_aware else torch.ones(graph.num_channels)).to(device)
        self.sign = BYPASS_SIGN[s.bypass]
        self.columns = column_positions(graph, device) if s.precondition else []
        self.variables = CatalystVariables(norm0.clone(), trainable=self.sign != 0.0)
        graph.model.add_module("catalyst_variables", self.variables)
        if self.sign:  # the term, from the parameters that set each channel's value (module docstring)
            self.term = graph.producer_slices(skip_normalized=True)
            self.undo.append(leave_out_of_ddp(graph.model, ["catalyst_variables.delta"]))
        self.undo += [hold_running_stats(graph.model)] if s.running_bn else []
        self.plan = CatalystSchedule(self, budget, s, steps)

    def detach_from_model(self) -> None:
        while self.undo:
            self.undo.pop()()
        self.term = []
        if self.variables is not None and hasattr(self.graph.model, "catalyst_variables"):
            delattr(self.graph.model, "catalyst_variables")

    @property
    def delta(self) -> torch.Tensor:
        return self.variables.delta

    def param_overrides(self) -> list[ParamOverride]:
        # no weight decay on F (the pressure is its only decay, relative: magnitude-free), none on delta either
        out = [ParamOverride(tuple(self.F.params), weight_decay=0.0)]
        if self.sign:
            out.append(ParamOverride((self.variables.delta,), weight_decay=0.0))
        return out

    # ---- per step ---------------------------------------------------------------------------------------
    def before_step(self) -> None:
        """delta's task gradient (`task_gradient`); then, until the freeze, precondition the task gradients so
        that a channel's magnitude does not change its dynamics: F's gradient times ||F||^2/m and delta's times
        delta/m (m: its squared norm expected at initialisation), which moves log||F|| and log delta by the same
        step for any magnitude, and the consumer columns' gradients as in `methods.invariance`. A
        function-preserving rescale of a channel then changes nothing in how the model trains, nor in the
        dynamics of c (tests/test_catalyst.py, P2)."""
        from catalyst_deploy.methods.invariance import precondition_columns

        self.task_gradient()
        if not self.settings.precondition or self.plan.frozen:
            return
        norms = self.F.norms()
        self.F.scale_(norms.pow(2) / self.unit, grad=True)
        if self.sign and self.delta.grad is not None:
            with torch.no_grad():
                self.delta.grad.mul_(self.delta.detach().abs() / self.unit)
        precondition_columns(self.columns)

    def task_gradient(self) -> None:
        """delta.grad = s * sum(theta * dL/dtheta) over the parameters setting each channel's value (module doc)."""
        if not self.term:
            return
        grad = torch.zeros_like(self.delta)
        with torch.no_grad():
            for sl in self.term:
                if sl.param.grad is None:
                    continue
                per_pos = sl.param.detach() * sl.param.grad
                other = [d for d in range(per_pos.dim()) if d != sl.dim]
                per_pos = per_pos.sum(dim=other) if other else per_pos
                grad.index_add_(0, sl.chan, (self.sign * per_pos.index_select(0, sl.pos)).to(grad.dtype))
        self.delta.grad = grad

    def after_step(self, lr: float, step: int) -> None:
        self.plan.after_step(step)

    def prox(self, step: torch.Tensor) -> None:
        """One proximal step on (F, delta) with per-channel size `step` (= eta*lambda*w), all channels at once;
        channels in `hold` keep their delta (the frozen prune set)."""
        norms = self.F.norms()
        d = self.delta.detach().abs()
        scale = torch.where(norms > 0, (1 - step * d / norms.clamp_min(1e-30)).clamp_min(0), torch.zeros_like(norms))
        self.F.scale_(scale)
        with torch.no_grad():
            shrunk = (d - step * norms).clamp_min(0)
            held = self.plan.held()
            self.delta.data.copy_(torch.where(held, self.delta.detach(), shrunk) if held is not None else shrunk)

    def pressure(self, rate: float) -> None:
        """The prune pressure: F of every undecided channel shrinks by the relative `rate`."""
        if rate > 0:
            self.F.scale_(torch.full((self.graph.num_channels,), 1.0 - rate, device=self.unit.device))

    def log_ratio(self) -> torch.Tensor:
        """log c per channel: +inf where F = 0, -inf where delta = 0 < ||F||."""
        norms = self.F.norms()
        d = self.delta.detach().abs()
        c = torch.where(norms > 0, d / norms.clamp_min(1e-30), torch.full_like(norms, math.inf))
        return c.log()

    def done(self) -> bool:
        return self.plan.settled()

    def status(self) -> dict:
        return self.plan.status()

    def decision_state(self):
        return self.plan.take_decision_state()

    def trajectory_point(self):
        return self.log_ratio().clamp(-50, 50).cpu().tolist()

    # ---- the decision -------------------------------------------------------------------------------------
    def priority(self) -> torch.Tensor:
        return self.log_ratio().clamp(-1e3, 1e3).cpu()

    def finish(self, steps_used: int) -> Decision:
        """Freeze now if the schedule did not, zero what the phase left of the prune set (counted as forced),
        take the catalyst out of the model."""
        mask = self.plan.finish(steps_used)
        priority = self.priority()
        self.detach_from_model()  # first: the parameters carry their own names again (rewind loads by name)
        if self.start_weights is not None and self.plan.split["forced"]:
            self.rewind()
        self.F.scale_((~mask).to(self.unit.device).float())
        return Decision(mask, priority)

    def rewind(self) -> None:
        """Give every weight and buffer of the model the value it had when the phase started (setting `rewind`).
        A forced freeze cuts channels that are not at F = 0, so the cut is not lossless anyway; this way it
        is not also a cut of the model the penalty shrank: the dynamics chose the set, the weights are the
        user's."""
        current = self.graph.model.state_dict()
        with torch.no_grad():
            for name, value in self.start_weights.items():
                current[name].copy_(value)
        self.start_weights, self.rewound = None, True

    def report(self) -> dict | None:
        found = self.plan.report()
        if found is not None and self.settings.rewind:
            found = {**found, "rewound": self.rewound}
        return found

    def state_dict(self) -> dict:
        state = {"delta": self.delta.detach().clone(), "unit": self.unit, "schedule": self.plan.state_dict()}
        if self.start_weights is not None:
            state["start_weights"] = self.start_weights
        return state

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.delta.data.copy_(state["delta"].to(self.delta.device))
        self.unit = state["unit"].to(self.unit.device)
        self.plan.load_state_dict(state["schedule"])
        if self.start_weights is not None:
            if "start_weights" not in state:
                raise CatalystDeployError("the checkpoint holds no start weights for the catalyst setting rewind: "
                                          "it was made without it; resume with the settings the run started with")
            saved, mine = state["start_weights"], self.start_weights
            if not isinstance(saved, dict) or set(saved) != set(mine) or any(
                    not torch.is_tensor(saved[k]) or saved[k].shape != mine[k].shape for k in mine):
                raise CatalystDeployError("the checkpoint's start weights (catalyst setting rewind) do not fit this "
                                          "model: resume with the model the run started from")
            self.start_weights = {k: saved[k].to(mine[k].device, mine[k].dtype) for k in mine}

