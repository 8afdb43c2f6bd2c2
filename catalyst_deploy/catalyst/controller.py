"""Steering Catalyst to a FLOPs target (DESIGN.md §2.4-2.5).

Every channel starts at c = d/||F|| = c0, a little on the prune side of the boundary c = 1, so each
channel must be defended by its task gradient to be kept (see `CatalystSettings.c0`). lambda starts
small and grows geometrically (reaching `step_max` at the deadline) while the model with every
*decided* channel removed (c >= c_hi) still has more MACs than the target. Once it does not, or once
`freeze_by` of the phase has gone by, the prune set is frozen: by default the channels in descending c
*within their group* (`rank`), filled across groups until the measured MACs meet the target. Kept
channels get d = 0, and the frozen set is driven to exactly zero with a constant step, so the cut that
follows is lossless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from catalyst_deploy.catalyst.regularizer import CatalystRegularizer
from catalyst_deploy.errors import UsageError
from catalyst_deploy.surgery import ChannelGraph


RANKS = ("global", "group")


@dataclass(frozen=True)
class CatalystSettings:
    """Knobs of the Catalyst schedule (recipes may override each). Strengths are given as the proximal
    step eta*lambda at the base learning rate, so they mean the same whatever the LR is."""

    step0: float = 0.01  # initial eta*lambda
    step_max: float = 0.05  # eta*lambda reached at the freeze deadline if the target is not met before
    check_every: int = 5  # steps between checks (each check measures MACs on a trial cut)
    c_hi: float = 1.5  # a channel counts as decided for pruning at c >= c_hi
    freeze_by: float = 0.6  # freeze at the latest after this share of the regularized phase
    freeze_step: float = 0.2  # constant eta*lambda that drives the frozen set to exactly zero
    # c = d/||F|| of every channel at the start. DESIGN.md 2.2 puts it on the boundary (1.0). On a dense
    # model converged with weight decay, turning the decay off tips the task gradient outward on almost
    # every channel: with c0 = 1, 436 of 448 channels had d = 0 (kept) by the forced freeze, and the prune
    # set was a tie-break. At 1.05 every channel must be defended to be kept; the freeze came at the
    # target, not the deadline, with +0.7-0.9 pt right after the cut (benchmarks/RESULTS.md, schedule study).
    c0: float = 1.05
    # Freeze order: "group" ranks c within each channel group and lets the MACs fill set the allocation;
    # "global" compares raw c across groups, and never pruned the group feeding the classifier, whose
    # larger gradient holds every c there low (the allocation cost 0.66 pt in a transplant test).
    rank: str = "group"
    # Once the decided set covers the target: freeze at once (False), or hold lambda there and wait until
    # every channel is decided either way (c >= c_hi or c < 1) or the deadline comes (True).
    hold: bool = False

    def __post_init__(self):
        if self.rank not in RANKS:
            raise UsageError(f"catalyst rank must be one of {', '.join(RANKS)}, not {self.rank!r}")
        if self.c0 < 1.0:
            raise UsageError(f"catalyst c0 must be >= 1 (c0 < 1 starts every channel on the keep side), not {self.c0}")

    def growth(self, total_steps: int) -> float:
        """lambda factor per check: geometric from step0 to step_max over the steps before the deadline."""
        checks = max(1.0, self.freeze_by * total_steps / self.check_every)
        return (self.step_max / self.step0) ** (1.0 / checks)


@dataclass
class ControllerTrace:
    step: int
    lam: float
    decided: int
    decided_macs_ratio: float


class TargetController:
    """Grows lambda, watches the decided set's MACs, freezes the prune set (see module doc)."""

    def __init__(self, method: CatalystRegularizer, graph: ChannelGraph, macs_dense: int, target_macs: float,
                 settings: CatalystSettings, total_steps: int, base_lr: float,
                 round_to: int | None, max_ratio: float):
        self.method, self.graph, self.settings = method, graph, settings
        self.macs_dense, self.target_macs = macs_dense, target_macs
        self.total_steps, self.base_lr = total_steps, base_lr
        self.round_to, self.max_ratio = round_to, max_ratio
        self.trace: list[ControllerTrace] = []
        self.frozen_at: int | None = None
        self.forced = False
        self.frozen_mask: torch.Tensor | None = None
        self.log_c_at_freeze: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, int] | None = None
        self.growth = settings.growth(total_steps)
        method.set_lambda(settings.step0 / base_lr, 0)

    @property
    def frozen(self) -> bool:
        return self.frozen_mask is not None

    @property
    def current_ratio(self) -> float:
        """MACs ratio of the decided (or frozen) set at the last check, for progress display."""
        return self.trace[-1].decided_macs_ratio if self.trace else 1.0

    def on_step(self, step: int) -> None:
        """Call after every `method.after_step`; `step` counts from 1."""
        s = self.settings
        if self.frozen or step % s.check_every:
            return
        decided = self.graph.limit(self.method.ratio().cpu() >= s.c_hi, self.method.scores(), None, self.max_ratio)
        macs = self._macs(decided)
        self.trace.append(ControllerTrace(step, self.method.lam, int(decided.sum()), macs / self.macs_dense))
        if macs <= self.target_macs:
            if not s.hold or step >= s.freeze_by * self.total_steps or self._separated():
                self.freeze(step)
        elif step >= s.freeze_by * self.total_steps:
            self.freeze(step, forced=True)
        else:
            self.method.set_lambda(self.method.lam * self.growth, step)

    def freeze(self, step: int, forced: bool = False) -> torch.Tensor:
        """Fix the prune set now (also called by the pipeline if the phase ends before a freeze)."""
        scores = self.method.scores()
        if self.settings.rank == "group":
            scores = group_quantiles(scores, self.graph)
        mask = self.graph.select_to_target(scores, self.target_macs, self.round_to, self.max_ratio)
        self.log_c_at_freeze = self.method.log_ratio().cpu()  # the split as the task loss left it
        self.method.freeze(mask, self.settings.freeze_step)
        self.frozen_mask, self.frozen_at, self.forced = mask, step, forced
        macs = self._macs(mask)
        self.trace.append(ControllerTrace(step, self.method.lam, int(mask.sum()), macs / self.macs_dense))
        return mask

    def _separated(self) -> bool:
        """Every channel decided either way: c >= c_hi (prune) or c < 1 (keep)."""
        c = self.method.ratio()
        return bool(((c >= self.settings.c_hi) | (c < 1.0)).all())

    def _macs(self, mask: torch.Tensor) -> int:
        if self._last is not None and torch.equal(self._last[0], mask):
            return self._last[1]
        macs = self.graph.trial_macs(mask)
        self._last = (mask.clone(), macs)
        return macs

    def state(self) -> dict:
        return {
            "frozen_at_step": self.frozen_at,
            "freeze_forced": self.forced,
            "trace": [t.__dict__ for t in self.trace],
        }


def group_quantiles(scores: torch.Tensor, graph: ChannelGraph) -> torch.Tensor:
    """Each channel's rank within its group, scaled to [0, 1] (1: the group's first to prune).

    c grows at a rate set by the group's task gradient relative to ||F||, which differs between groups
    (the group that feeds the classifier resists most), so raw c compares channels within a group, not
    across groups. Ranking within groups keeps the comparison scale-free and leaves the allocation
    across groups to the MACs fill of `select_to_target`."""
    sizes = torch.tensor(graph.sizes)
    return graph.group_ranks(scores) / torch.repeat_interleave((sizes - 1).clamp_min(1), sizes).float()
