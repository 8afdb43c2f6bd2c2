"""Catalyst's schedule: steering it to a FLOPs target (docs/method.md, "Schedule"). Part of the method: the
`GatedCatalyst` builds its controller in `start` and calls it after every step.

lambda starts small and grows geometrically, reaching `step_max` at the deadline, while the channels the
dynamics have already cut off (s = 0) remove too few MACs. Once they remove enough, lambda is held: the
penalty keeps working on the channels still undecided until they split by themselves (s = 0 or d = 0).
The freeze comes when at most `settle` of the channels are undecided, or at the deadline; the prune set
is then the collapsed channels, trimmed or filled to the target only at the margin (`allocation.Budget`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from catalyst_deploy.methods.catalyst_schedule import live_margin

if TYPE_CHECKING:
    from catalyst_deploy.methods.catalyst_gated import GatedCatalyst
    from catalyst_deploy.surgery.allocation import Budget


@dataclass
class ControllerTrace:
    step: int
    lam: float
    collapsed: int
    kept: int
    collapsed_macs_ratio: float


@dataclass
class Split:
    """How the dynamics had split the channels when the prune set was frozen (before anything forced)."""

    step: int
    forced: bool
    collapsed: int
    kept: int
    undecided: int
    margin: float | None  # min log c over the prune set - max log c over the live channels kept
    decided_share: float  # channels with c <= 0.1 or c >= 10
    filled: int  # channels the margin fill added to the collapsed set
    given_back: int  # collapsed channels the margin trim kept
    log_c: list[float]


class GatedController:
    """Grows lambda, watches the split, freezes the prune set (see module doc)."""

    def __init__(self, method: GatedCatalyst, budget: Budget, macs_dense: int, settings, total_steps: int,
                 base_lr: float):
        self.method, self.budget, self.settings = method, budget, settings
        self.macs_dense, self.total_steps, self.base_lr = macs_dense, total_steps, base_lr
        self.deadline = max(1, int(settings.deadline * total_steps))
        checks = max(1.0, self.deadline / settings.check_every)
        self.growth = (settings.step_max / settings.step0) ** (1.0 / checks)
        self.trace: list[ControllerTrace] = []
        self.holding = False
        self.split: Split | None = None
        self._cache: tuple[torch.Tensor, int] | None = None
        method.set_lambda(settings.step0 / base_lr, 0)

    @property
    def frozen(self) -> bool:
        return self.split is not None

    @property
    def current_ratio(self) -> float:
        return self.trace[-1].collapsed_macs_ratio if self.trace else 1.0

    def on_step(self, step: int) -> None:
        """Call after every `method.after_step`; `step` counts from 1."""
        if self.frozen or step % self.settings.check_every:
            return
        s = self.method.s.detach().cpu()
        collapsed, kept = s == 0, (self.method.d == 0).cpu()
        macs = self._macs(self.budget.limit(collapsed, self.method.priority()))
        self.trace.append(ControllerTrace(step, self.method.lam, int(collapsed.sum()), int(kept.sum()),
                                          macs / self.macs_dense))
        self.holding = self.holding or macs <= self.budget.target_macs
        undecided = float((~(collapsed | kept)).float().mean())
        if (self.holding and undecided <= self.settings.settle) or step >= self.deadline:
            self.freeze(step, forced=not (self.holding and undecided <= self.settings.settle))
        elif not self.holding:
            self.method.set_lambda(self.method.lam * self.growth, step)

    def freeze(self, step: int, forced: bool = False) -> torch.Tensor:
        """Fix the prune set now (the pipeline calls it too if the phase ends before a freeze)."""
        priority = self.method.priority()
        collapsed = (self.method.s.detach() == 0).cpu()
        # every collapsed channel goes (after a ReLU a gate at 0 gets no gradient: it could never grow back),
        # as far as the --round-to blocks allow (rounding up instead cost 7 points of MACs and 2 of accuracy on
        # the demo; docs/method.md)
        mask = self.budget.limit(self.budget.select(priority) | collapsed, priority, self.budget.round_to)
        self.split = self._split(step, forced, mask)
        self.method.freeze(mask, self.settings.freeze_step, self.settings.restore)
        return mask

    def _split(self, step: int, forced: bool, mask: torch.Tensor) -> Split:
        log_c = self.method.log_ratio().cpu().clamp(-50.0, 50.0)  # +-50: s = 0 / d = 0
        collapsed, kept = (self.method.s.detach() == 0).cpu(), (self.method.d == 0).cpu()
        margin = live_margin(log_c, mask, collapsed)
        decided = float(((log_c.abs() >= torch.log(torch.tensor(10.0)))).float().mean())
        return Split(step, forced, int(collapsed.sum()), int(kept.sum()), int((~(collapsed | kept)).sum()),
                     margin, decided, int((mask & ~collapsed).sum()), int((collapsed & ~mask).sum()),
                     log_c.tolist())

    def _macs(self, mask: torch.Tensor) -> int:
        if self._cache is not None and torch.equal(self._cache[0], mask):
            return self._cache[1]
        macs = self.budget.macs_of(mask)
        self._cache = (mask.clone(), macs)
        return macs

    def state(self) -> dict:
        split = None if self.split is None else {k: v for k, v in asdict(self.split).items() if k != "log_c"}
        return {"split": split, "trace": [asdict(t) for t in self.trace]}

    def state_dict(self) -> dict:
        """Plain containers only (checkpoints are read with weights_only=True)."""
        return {"holding": self.holding, "trace": [asdict(t) for t in self.trace],
                "split": None if self.split is None else asdict(self.split)}

    def load_state_dict(self, state: dict) -> None:
        self.holding = state["holding"]
        self.split = None if state["split"] is None else Split(**state["split"])
        self.trace = [ControllerTrace(**t) for t in state["trace"]]

