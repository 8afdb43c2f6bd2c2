"""The phase runner drives any pruning method through `methods.base.PruningMethod` alone: a method it has never
heard of, added as one row of the method table, gets its schedule, its parameter overrides, its early end, its
decision check, its trajectory, its decision and its report."""

from __future__ import annotations

import json

import torch
from torch import nn

from catalyst_deploy import api
from catalyst_deploy.method_table import METHODS, MethodSpec
from catalyst_deploy.methods.base import ParamOverride, PruningMethod
from catalyst_deploy.run import distributed
from catalyst_deploy.run.train import PhaseSettings, make_optimizer

FAST = dict(data="demo", train_limit=512, test_limit=256, batch_size=64, steps_per_epoch=4, reg_epochs=2,
            recover_epochs=1, device="cpu", lr=0.02, record_every=1)
ENDS_AFTER = 3  # of the phase's 8 steps


class ProbeMethod(PruningMethod):
    """Uses every hook, and records what the runner gave it."""

    schedule = "constant"

    def start(self, graph, budget, steps) -> None:
        super().start(graph, budget, steps)
        self.held = next(graph.model.parameters())  # trains at lr scale 0: must not move
        self.held_at_start = self.held.detach().clone()
        self.phase_steps, self.lrs = steps, []

    def param_overrides(self) -> list[ParamOverride]:
        return [ParamOverride((self.held,), lr_scale=0.0)]

    def after_step(self, lr: float, step: int) -> None:
        self.lrs.append(lr)
        if step == ENDS_AFTER:
            self.unchecked = ("probe step", {"step": step})

    def done(self) -> bool:
        return len(self.lrs) >= ENDS_AFTER

    def decision_state(self):
        """One decision during the phase (at its last step) and one in `finish`, each named once."""
        unchecked, self.unchecked = getattr(self, "unchecked", None), None
        return unchecked

    def trajectory_point(self) -> list[float]:
        return [float(len(self.lrs))]

    def priority(self) -> torch.Tensor:
        return torch.arange(self.graph.num_channels, dtype=torch.float32)

    def finish(self, steps_used: int):
        self.steps_used = steps_used
        self.unchecked = ("probe finish", {"steps_used": steps_used})
        return super().finish(steps_used)

    def report(self) -> dict:
        return {"phase_steps": self.phase_steps, "steps_used": self.steps_used, "lrs": self.lrs,
                "held_still": bool(torch.equal(self.held.detach(), self.held_at_start))}


def test_the_runner_drives_a_method_it_does_not_know(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "probe", MethodSpec("probe", "test probe", f"{__name__}:ProbeMethod", True))
    checked = []
    monkeypatch.setattr(distributed, "check_identical", lambda where, state: checked.append((where, state)))
    cfg = api.load_config(model="zoo:tiny_cnn", method="probe", out=str(tmp_path / "probe"), **FAST)
    report = api.prune(cfg, log=lambda _m: None)
    rec = report.method
    assert rec["phase_steps"] == 8 and rec["steps_used"] == ENDS_AFTER  # done() ended the phase early
    assert report.steps == {"regularize": ENDS_AFTER, "recover": 4 + 8 - ENDS_AFTER}  # the rest went to recovery
    assert rec["lrs"] == [0.02] * ENDS_AFTER  # its constant schedule (cosine would have decayed by step 2)
    assert rec["held_still"], "its parameter override (lr scale 0) reached the optimizer"
    # the state it named at each decision went to the cross-rank check right then (before the runner's own, the cut)
    assert [where for where, _ in checked] == ["probe step", "probe finish", "cut"]
    assert checked[:2] == [("probe step", {"step": ENDS_AFTER}), ("probe finish", {"steps_used": ENDS_AFTER})]
    assert report.trajectory == [[step, [float(step)]] for step in range(1, ENDS_AFTER + 1)]
    assert report.channels["priority"] == list(range(len(report.channels["priority"])))
    pruned = report.channels["pruned"]
    assert pruned and min(pruned) > report.channels["total"] // 2  # the highest priorities were cut
    assert json.loads((tmp_path / "probe" / "report.json").read_text())["method"] == rec


def test_param_overrides_set_a_learning_rate_scale_and_a_weight_decay_per_parameter():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    first, second = model[0].weight, model[1].weight
    overrides = [ParamOverride((first, second), weight_decay=0.0), ParamOverride((second,), 2.0, 1e-2)]
    optimizer = make_optimizer(model, PhaseSettings(1, 0.1, weight_decay=5e-4), overrides)
    settings = {id(p): (g["weight_decay"], g["lr_scale"]) for g in optimizer.param_groups for p in g["params"]}
    assert settings[id(first)] == (0.0, 1.0)
    assert settings[id(second)] == (1e-2, 2.0)  # the last override of a parameter wins
    assert settings[id(model[0].bias)] == settings[id(model[1].bias)] == (5e-4, 1.0)  # the phase's own


def test_a_first_schema_report_reads_back_with_its_catalyst_record_as_the_method_record():
    from catalyst_deploy.report import PruneReport

    old = {"schema": "catalyst-deploy/prune-report/1", "config": {"method": "catalyst"}, "catalyst": {"split": None}}
    assert PruneReport.from_dict(old).method == {"split": None}
