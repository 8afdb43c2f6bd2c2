"""The gated Catalyst (`--method catalyst-gated`): this project's reconstruction of the Catalyst regularizer
(Jung & Lee, ICML 2025 HiLD workshop) before the paper's formulation was known; docs/method.md.

Each prunable channel j gets a *gate* s_j, a scalar that multiplies the channel's producer parameters
(BN scale and shift, or the conv/linear rows and bias when no BN follows). It starts at 1, so the model
computes exactly what it did, and trains with the task loss like any weight. The catalyst d_j >= 0 lives
outside the model. The penalty is

    lambda * sum_j w_j * d_j * |s_j|          (w_j: the MACs removing channel j saves, mean 1)

and after every optimizer step both sides take the same proximal step (eta*lambda*w_j):

    |s| <- max(0, |s| - eta*lambda*w*d)       d <- max(0, d - eta*lambda*w*|s_old|)

Its zero set {s = 0 or d = 0} is the set of lossless prunings. Under the penalty alone s^2 - d^2 only
shrinks by (1 - (eta*lambda*w)^2), so the decision c = d/|s| (> 1 prune, < 1 keep) flips only when the
task gradient on s moves it; every channel starts at c = c0 > 1 and must be defended to be kept. Because
s is the channel's *relative* scale, a channel's magnitude never enters its decision: the task gradient on
s is the same whatever the channel's weights are scaled by (a function-preserving rescale). At the cut the
gates are folded into the producer parameters, so the exported model has no extra op.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from catalyst_deploy.methods.base import Decision, ParamOverride, PruningMethod

if TYPE_CHECKING:
    import torch

    from catalyst_deploy.methods.gated_controller import GatedController
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph


class GatedCatalyst(PruningMethod):
    """The gates, the catalyst variables and the proximal update; its schedule (lambda, when to freeze the
    prune set) is its `controller` (`methods.gated_controller.GatedController`), built by `start`."""

    # the controller's step sizes are proximal steps per optimizer step at the base learning rate, and the
    # frozen prune set must still reach zero at the end of the phase: no decay of the learning rate
    schedule = "constant"
    synchronised = True  # gates and d follow the DDP-averaged gradients: every rank decides the same

    def __init__(self, settings, base_lr: float):
        """`settings`: config.GatedCatalystSettings; `base_lr`: the phase's learning rate (--lr)."""
        self.settings, self.base_lr = settings, base_lr
        self.c0, self.cost_aware, self.gate_lr = settings.c0, settings.cost_aware, settings.gate_lr
        self.invariant = settings.invariant
        self.columns: list = []  # (weight, input positions) preconditioned by `before_step` when invariant
        self.lam = 0.0
        self.frozen: torch.Tensor | None = None  # bool mask of the prune set once frozen
        self.frozen_step = 0.0
        self.steps = 0
        self.history: list[tuple[int, float]] = []
        self.controller: GatedController | None = None
        self._unchecked: tuple[str, dict] | None = None  # the freeze, until the runner has compared it
        self._report: dict | None = None

    @classmethod
    def from_config(cls, cfg) -> GatedCatalyst:
        return cls(cfg.catalyst_gated, cfg.lr)

    # ---- PruningMethod -------------------------------------------------------------------------
    def start(self, graph: ChannelGraph, budget: Budget, steps: int) -> None:
        import torch

        from catalyst_deploy.methods.gated_controller import GatedController
        from catalyst_deploy.methods.gates import attach_gates, channel_costs

        super().start(graph, budget, steps)
        device = next(graph.model.parameters()).device
        costs = channel_costs(graph, budget) if self.cost_aware else torch.ones(graph.num_channels)
        self.weights = costs.to(device)
        self.gates = attach_gates(graph, device)
        self.d = torch.full((graph.num_channels,), float(self.c0), device=device)
        self.collapsed_at = torch.full((graph.num_channels,), -1, dtype=torch.long, device=device)
        if self.invariant:
            from catalyst_deploy.surgery.graph import consumer_columns

            self.columns = [(w, torch.tensor(pos, device=device)) for w, pos in consumer_columns(graph)]
        dense_macs = budget.macs_of(torch.zeros(graph.num_channels, dtype=torch.bool))
        self.controller = GatedController(self, budget, dense_macs, self.settings, steps, self.base_lr)

    @property
    def s(self):
        return self.gates.s

    def param_overrides(self) -> list[ParamOverride]:
        # the gates carry each channel's scale: decay would shrink it in proportion to itself, the magnitude
        # bias the penalty is there to remove
        return [ParamOverride((self.gates.s,), lr_scale=self.gate_lr, weight_decay=0.0)]

    def before_step(self) -> None:
        """With `invariant`: multiply the task gradient of each consumer input column by its squared norm over
        its expected norm at initialisation (2 * out / in, from the shape alone). A rescale of a channel by k
        (producer x k, consumer columns x 1/k) multiplies a column's gradient by k and this factor by 1/k^2,
        so the column's step scales by 1/k, exactly like the column: the update commutes with the rescale.
        SGD's weight decay is added after this and is proportional to the weight, so it commutes too."""
        import torch

        with torch.no_grad():
            for weight, pos in self.columns:
                if weight.grad is None:
                    continue
                norm2 = weight.index_select(1, pos).pow(2).transpose(0, 1).flatten(1).sum(1)
                scale = norm2 / (2.0 * weight.shape[0] / weight.shape[1])
                shape = (1, -1) + (1,) * (weight.dim() - 2)
                weight.grad.index_copy_(1, pos, weight.grad.index_select(1, pos) * scale.view(shape))

    def after_step(self, lr: float, step: int) -> None:
        self.apply_penalty(lr)
        was_frozen = self.controller.frozen
        self.controller.on_step(step)
        if self.controller.frozen and not was_frozen:
            self._unchecked = ("freeze", self._freeze_state(step))

    def done(self) -> bool:
        """The phase ends once the frozen prune set is exactly zero: the rest goes to recovery."""
        return self.controller.frozen and self.settled()

    def status(self) -> dict:
        return {"flops": self.controller.current_ratio, "lam": self.lam}

    def decision_state(self) -> tuple[str, dict] | None:
        unchecked, self._unchecked = self._unchecked, None
        return unchecked

    def trajectory_point(self) -> list[float]:
        return self.log_ratio().clamp(-50, 50).cpu().tolist()  # +-50: s = 0 / d = 0

    def priority(self) -> torch.Tensor:
        """Collapsed channels (s = 0) first, the earliest collapse first; then by log c, highest first."""
        import torch

        collapsed = self.s.detach() == 0
        early_first = 1e4 - self.collapsed_at.float() / max(1, self.steps)
        log_c = self.log_ratio().clamp(-1e3, 1e3)
        return torch.where(collapsed, early_first, log_c).cpu()

    def finish(self, steps_used: int) -> Decision:
        """Freeze if the phase ended first, zero what the phase did not, fold the gates; report the split."""
        import torch

        priority = self.priority()
        if not self.controller.frozen:
            self.controller.freeze(steps_used, forced=True)
            self._unchecked = ("freeze", self._freeze_state(steps_used))
        forced = int((self.s.detach()[self.frozen] != 0).sum())
        with torch.no_grad():
            self.s.data[self.frozen] = 0.0
        self.fold()
        self._report = {**self.controller.state(), **self.summary(), "phase_steps": steps_used,
                        "forced_to_zero": forced, "log_c_at_freeze": self.controller.split.log_c}
        return Decision(self.frozen.cpu().clone(), priority)

    def report(self) -> dict | None:
        return self._report

    def summary(self) -> dict:
        return {"lambda_history": self.history, "collapsed": int((self.s.detach() == 0).sum()),
                "kept_d_zero": int((self.d == 0).sum()), "channels": self.graph.num_channels}

    def state_dict(self) -> dict:
        return {"d": self.d, "collapsed_at": self.collapsed_at, "lam": self.lam, "steps": self.steps,
                "frozen": self.frozen, "frozen_step": self.frozen_step, "history": self.history,
                "controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        device = self.d.device
        self.d, self.collapsed_at = state["d"].to(device), state["collapsed_at"].to(device)
        self.lam, self.steps, self.history = state["lam"], state["steps"], list(state["history"])
        self.frozen = None if state["frozen"] is None else state["frozen"].to(device)
        self.frozen_step = state["frozen_step"]
        self.controller.load_state_dict(state["controller"])

    def _freeze_state(self, step: int) -> dict:
        """What every rank must hold identically at the freeze (copies: `finish` zeroes gates afterwards)."""
        return {"mask": self.frozen.clone(), "d": self.d.clone(), "lambda": self.lam,
                "gates": self.s.detach().clone(), "step": step}

    # ---- the update ------------------------------------------------------------------------------
    def apply_penalty(self, lr: float) -> None:
        """The proximal step of the penalty after an optimizer step at learning rate `lr` (the frozen prune set
        at its own constant step once frozen)."""
        import torch

        self.steps += 1
        with torch.no_grad():
            if self.frozen is None:
                self.prox(torch.full_like(self.d, lr * self.lam) * self.weights)
            else:
                self.prox(torch.where(self.frozen, self.frozen_step, 0.0) * self.weights)

    # ---- the update ------------------------------------------------------------------------------
    def prox(self, step: torch.Tensor) -> None:
        """One proximal step with per-channel step size `step` (= eta*lambda*w), all channels at once."""
        import torch

        s = self.s.data
        size = s.abs()
        shrunk = (size - step * self.d).clamp_min(0.0)
        d_next = (self.d - step * size).clamp_min(0.0)
        self.collapsed_at = torch.where((shrunk == 0) & (size > 0), self.steps, self.collapsed_at)
        s.copy_(torch.sign(s) * shrunk)
        self.d = d_next if self.frozen is None else torch.where(self.frozen, self.d, d_next)

    def ratio(self) -> torch.Tensor:
        """c = d/|s| per channel: inf where s = 0 (the channel is dead whatever d is), 0 where d = 0 < |s|."""
        import torch

        size = self.s.detach().abs()
        return torch.where(size > 0, self.d / size.clamp_min(1e-30), torch.full_like(size, math.inf))

    def log_ratio(self) -> torch.Tensor:
        """log c: +inf for s = 0, -inf for d = 0."""
        return self.ratio().log()

    def set_lambda(self, lam: float, step: int) -> None:
        self.lam = lam
        self.history.append((step, lam))

    def freeze(self, prune: torch.Tensor, step_size: float, restore: bool) -> None:
        """Fix the prune set: kept channels get d = 0 (free from now on) and, with `restore`, their full
        scale back (s = 1: the phase shrinks every channel while it decides, and a shrunken survivor does
        not grow back in recovery); channels of the set that are not at s = 0 yet are driven there with
        the constant step `step_size`, d held fixed so the task gradient cannot wear it down."""
        import torch

        prune = prune.to(self.d.device)
        self.frozen, self.frozen_step = prune, step_size
        with torch.no_grad():
            size = self.s.data.abs()
            self.d = torch.where(prune, torch.maximum(self.d, 2.0 * size), torch.zeros_like(self.d))
            if restore:
                self.s.data.copy_(torch.where(prune, self.s.data, torch.ones_like(self.s.data)))

    def settled(self) -> bool:
        """True once the frozen prune set is exactly zero (the cut is then lossless)."""
        return self.frozen is not None and bool((self.s.detach()[self.frozen] == 0).all())

    def fold(self) -> None:
        """Multiply each gate into its producer parameters and remove the gates (exact: same function)."""
        self.gates.fold()
