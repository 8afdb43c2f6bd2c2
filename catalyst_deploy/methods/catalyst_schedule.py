"""Catalyst's schedule: how hard the penalty pulls, when the prune set is taken, and how it reaches zero
(docs/method.md, "The paper's form: schedule").

Both ramps are geometric and are given by what they add up to by the deadline, so the schedule adapts to the
number of steps the phase has: `strength` is the sum of the proximal steps eta*lambda (the penalty's own clock:
a channel at c = 1.5 reaches F = 0 after atanh(1/1.5) = 0.80 of it), `pressure` the sum of the relative decay
of every F (what tips undefended channels to c > 1). Every `check_every` steps the schedule measures, by a
trial cut, the MACs of the model without the channels at c >= c_hi (with `center`, the fitted count from the
groups' widths answers first and the trial cut confirms); once they reach the target, the prune set
is frozen: the channels at c > 1, by descending c, until the target is met (within --round-to blocks). Kept
channels get delta = 0 and are free from then on; the prune set keeps its delta and is driven to exactly zero
with the constant step `freeze_step`, and the phase ends. At the deadline (a share of the phase, and at most
`window_epochs` passes over the data) the set is frozen anyway, filled from the c <= 1 side if it must be
(recorded as forced).
"""

from __future__ import annotations

import math

import torch

from catalyst_deploy.errors import CatalystDeployError
from catalyst_deploy.surgery.fitted_macs import coupled_pairs, fit_count

LAMBDA_RATIO = 10.0  # the proximal step grows tenfold over the ramp
PRESSURE_RATIO = 1000.0  # the pressure starts a thousandth of where it ends: the first channels tip off alone


def geometric_start(total: float, ratio: float, steps: int) -> float:
    """First term of a geometric ramp of `steps` terms growing by `ratio` in all that sums to `total`."""
    if steps <= 1:
        return total
    q = ratio ** (1.0 / (steps - 1))
    return total * (q - 1.0) / (q ** steps - 1.0)


def deadline_step(settings, steps: int, epoch_steps: int | None) -> int:
    """The step of the latest freeze: `deadline` of the phase, and at most `window_epochs` passes over the data
    (the ranking needs data, not a share of the budget: a long phase's late steps go to recovery instead)."""
    last = settings.deadline * steps
    if settings.window_epochs > 0 and epoch_steps:
        last = min(last, settings.window_epochs * epoch_steps)
    return max(1, int(round(last)))


class CatalystSchedule:
    def __init__(self, method, budget, settings, steps: int):
        self.method, self.budget, self.settings = method, budget, settings
        self.deadline = deadline_step(settings, steps, method.epoch_steps)
        # a short phase cannot take the whole strength: no step beyond step_cap (the model would not survive it);
        # the freeze at the deadline then takes the split as far as the dynamics got (recorded as forced)
        self.step0 = min(geometric_start(settings.strength, LAMBDA_RATIO, self.deadline), settings.step_cap / LAMBDA_RATIO)
        self.pressure0 = geometric_start(settings.pressure, PRESSURE_RATIO, self.deadline)
        self.mask: torch.Tensor | None = None
        self.split: dict | None = None
        self.history: list[list[float]] = []  # [step, eta*lambda, pressure] at every check
        self._decision: tuple[str, dict] | None = None
        self.forced_to_zero = 0
        self.shift = 0.0  # the sum of the shifts of log c made by `center`
        self.reachable: bool | None = None  # `center`: whether the target can be met at all (asked once)
        self.prefix: int | None = None  # `center`: the prefix length its last look found
        # `center` and the checks count MACs often: a count from the groups' widths, fitted once by trial cuts
        # and kept only where it agrees exactly with them (fitted_macs.fit_count; None: trial cuts every time)
        self.count = (fit_count(budget.sizes, budget.macs_of, coupled_pairs(method.graph), budget.round_to,
                                budget.max_ratio, unit_width=budget.unit_width) if settings.center else None)

    @property
    def frozen(self) -> bool:
        return self.mask is not None

    def rates(self, step: int) -> tuple[float, float]:
        t = min(step, self.deadline) - 1
        q = lambda ratio: ratio ** (t / max(1, self.deadline - 1))  # noqa: E731
        return self.step0 * q(LAMBDA_RATIO), self.pressure0 * q(PRESSURE_RATIO)

    def after_step(self, step: int) -> None:
        m = self.method
        if self.frozen:
            m.prox(torch.where(self.mask_on_device, self.settings.freeze_step, 0.0) * m.weights)
            return
        lam, pressure = self.rates(step)
        m.prox(lam * m.weights)
        m.pressure(pressure)
        if step % self.settings.check_every == 0 or step >= self.deadline:
            self.history.append([step, lam, pressure])
            if self.settings.center:
                self.center()
            self.check(step)

    def center(self) -> None:
        """Put the target's boundary at c = 1 (setting `center`): as many channels are above it as the target
        takes by descending c. Every undecided channel's delta is scaled by one common factor, so the order the
        dynamics made is kept, the model computes the same, and the proximal step, whose fixed point is c = 1,
        drives the channels above the boundary to F = 0 and the ones below to delta = 0."""
        m = self.method
        log_c = m.log_ratio().cpu()
        if self.settings.center_groups:
            log_c = self.center_groups(log_c)
        if self.reachable is None:  # out of reach: no centering, the freeze says so
            self.reachable = self.budget.largest_cut_macs() <= self.budget.target_macs
        if not self.reachable:
            return
        # the shortest prefix that meets the target (no fill-back: a look every check_every steps must be
        # cheap), searched out from the last one: a few trial cuts where a full search takes tens
        self.prefix, cut = self.budget.prefix(log_c.clamp(-1e3, 1e3), hint=self.prefix, macs_of=self.count)
        wanted = int(cut.sum())
        ordered = log_c.sort(descending=True).values
        if not 0 < wanted < len(ordered):
            return
        above, below = float(ordered[wanted - 1]), float(ordered[wanted])
        if not (math.isfinite(above) and math.isfinite(below)):  # the boundary is among decided channels
            return
        shift = 0.5 * (above + below)
        live = torch.isfinite(log_c).to(m.delta.device)
        with torch.no_grad():
            m.delta.data.mul_(torch.where(live, math.exp(-shift), 1.0).to(m.delta.dtype))
        self.shift += shift

    def center_groups(self, log_c: torch.Tensor) -> torch.Tensor:
        """Scale each group's undecided delta by one factor so that the group's mean log c is 0 (setting
        `center_groups`); returns the new log c. The order within each group is kept and the model is untouched."""
        m = self.method
        live = torch.isfinite(log_c)
        group = torch.repeat_interleave(torch.arange(len(self.budget.sizes)), torch.tensor(self.budget.sizes))
        count = torch.zeros(len(self.budget.sizes)).index_add_(0, group, live.float())
        total = torch.zeros(len(self.budget.sizes)).index_add_(0, group, torch.where(live, log_c, 0.0))
        mean = torch.where(count > 0, total / count.clamp_min(1), 0.0)[group]
        shift = torch.where(live, mean, 0.0)
        with torch.no_grad():
            m.delta.data.mul_(torch.exp(-shift).to(m.delta.device, m.delta.dtype))
        return log_c - shift

    def check(self, step: int) -> None:
        log_c = self.method.log_ratio().cpu()
        decided = self.budget.limit(log_c >= math.log(self.settings.c_hi), log_c)
        # the fitted count only spares the trial cut while the decided set is still short of the target
        if (self.count is None or self.count(decided) <= self.budget.target_macs) and \
                self.budget.macs_of(decided) <= self.budget.target_macs:
            self.freeze(step, forced=False)
        elif step >= self.deadline:
            self.freeze(step, forced=True)

    def freeze(self, step: int, forced: bool) -> torch.Tensor:
        """Take the prune set now: the channels at c > 1 by descending c, to the target."""
        m = self.method
        log_c = m.log_ratio().cpu()
        priority = log_c.clamp(-1e3, 1e3)
        try:
            mask = self.budget.select(priority, candidates=log_c > 0)
        except CatalystDeployError:  # the c > 1 side cannot reach the target: fill from the other side
            mask, forced = self.budget.select(priority), True
        # every collapsed channel goes too, as far as the --round-to blocks allow (F = 0 is a dead channel)
        mask = self.budget.limit(mask | torch.isposinf(log_c), priority, self.budget.round_to)
        self.split = split_record(step, forced, mask, log_c, m.F.norms().cpu(), m.delta.detach().abs().cpu())
        self.mask = mask
        self.mask_on_device = mask.to(m.unit.device)
        with torch.no_grad():  # kept channels are free from now on
            m.delta.data.copy_(torch.where(self.mask_on_device, m.delta.detach(), torch.zeros_like(m.delta)))
        self._decision = ("freeze", {"mask": mask, "delta": m.delta.detach(), "step": step})
        return mask

    def held(self) -> torch.Tensor | None:
        return self.mask_on_device if self.frozen else None

    def settled(self) -> bool:
        """The phase may end: the prune set is exactly zero, or the freeze was forced (the dynamics did not make
        the set, so driving it to zero slowly buys nothing: `finish` zeroes it and recovery gets the steps)."""
        if not self.frozen:
            return False
        return self.split["forced"] or bool((self.method.F.norms()[self.mask_on_device] == 0).all())

    def finish(self, steps_used: int) -> torch.Tensor:
        if not self.frozen:
            self.freeze(steps_used, forced=True)
        self.forced_to_zero = int((self.method.F.norms()[self.mask_on_device] != 0).sum())
        self.phase_steps = steps_used
        return self.mask.clone()

    def take_decision_state(self):
        decision, self._decision = self._decision, None
        return decision

    def status(self) -> dict:
        if self.frozen:
            return {"frozen": 1.0}
        return {"lam": self.history[-1][1] if self.history else self.step0}

    def report(self) -> dict:
        split = dict(self.split or {})
        log_c = split.pop("log_c", None)
        return {"form": "paper", "split": split, "history": self.history, "log_c_at_freeze": log_c,
                "lambda_history": [[s, lam] for s, lam, _ in self.history],
                "phase_steps": getattr(self, "phase_steps", None), "forced_to_zero": self.forced_to_zero,
                "center_shift": self.shift,
                "center_count": None if not self.settings.center else "fitted" if self.count else "trial cuts"}

    def state_dict(self) -> dict:
        return {"mask": self.mask, "split": self.split, "history": self.history, "shift": self.shift,
                "prefix": self.prefix}

    def load_state_dict(self, state: dict) -> None:
        self.history = [list(h) for h in state["history"]]
        self.split = state["split"]
        self.shift = float(state.get("shift", 0.0))
        prefix = state.get("prefix")  # untrusted: only a count is taken from it
        self.prefix = int(prefix) if isinstance(prefix, int) and not isinstance(prefix, bool) else None
        if state["mask"] is not None:
            self.mask = state["mask"].clone()
            self.mask_on_device = self.mask.to(self.method.unit.device)


def split_record(step: int, forced: bool, mask: torch.Tensor, log_c: torch.Tensor, norms: torch.Tensor,
                 delta: torch.Tensor) -> dict:
    """How the dynamics had split the channels when the prune set was taken, before anything was forced (the
    same keys as the gated form's split: `collapsed` is F = 0 here, `kept` delta = 0)."""
    shown = log_c.clamp(-50.0, 50.0)
    collapsed, kept = norms == 0, (delta == 0) & (norms > 0)
    margin = live_margin(shown, mask, collapsed)
    return {"step": step, "forced": forced, "collapsed": int(collapsed.sum()), "kept": int(kept.sum()),
            "undecided": int((~(collapsed | kept)).sum()), "margin": margin,
            "decided_share": float((shown.abs() >= math.log(10)).float().mean()),
            "filled": int((mask & (log_c <= 0)).sum()), "given_back": int((~mask & collapsed).sum()),
            "prune_set_at_zero": int((mask & collapsed).sum()), "log_c": shown.tolist()}


def live_margin(log_c: torch.Tensor, mask: torch.Tensor, collapsed: torch.Tensor) -> float | None:
    """min log c over the prune set - max log c over the live channels kept (both forms). A collapsed channel
    (F = 0, or the gated form's s = 0) that the --round-to blocks gave back is dead whatever the decision, and
    its clamped log c = +50 would make every such margin read about -50 (it counts in `given_back` instead)."""
    live_kept = ~mask & ~collapsed
    return float(log_c[mask].min() - log_c[live_kept].max()) if mask.any() and live_kept.any() else None
