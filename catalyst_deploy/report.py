"""What a `prune` run returns and writes to report.json: a typed, versioned record (schema below).

report.json (schema "catalyst-deploy/prune-report/2"; keys are stable, null where not applicable):

    schema, created_utc, out, device, input_shape
    config          every setting of the run (config.PruneConfig as JSON)
    accuracy        top-1 % on the test split: dense, after_regularization, after_surgery, final, and
                    after_decision where the method forced part of its prune set to zero when it decided, or
                    kept channels it had zeroed were restored (method.revived; surgery/revive.py): the model the
                    cut starts from (the cut of a regularizing method is lossless from there)
    val_accuracy    the same on the held-out validation split (null without val_size)
    macs, params    {dense, pruned, ratio} (MACs as torch-pruning counts them)
    channels        {removed, total, pruned: [global channel indices], priority: [per channel, higher =
                    pruned first, as the method ranked them when it decided]}
    steps           optimizer steps per phase: {pretrain, regularize, recover}
    seconds         wall time per phase and in total
    method          the pruning method's own record of its phase (`PruningMethod.report`; null when it keeps
                    none). Catalyst: the split at the freeze (margin, decided share, ...), lambda and controller
                    traces, log c of every channel at the freeze
    latency_aware   the group weights when --latency-aware was given
    exports         per format: {path, max_abs_diff, atol} or {error}
    latency         bench.json's ratios of the exported files, dense against pruned
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = "catalyst-deploy/prune-report/2"  # /1 named `method` "catalyst" (read back as `method`)
ACCURACY_KEYS = ("dense", "after_regularization", "after_surgery", "final")


@dataclass
class Counts:
    dense: int
    pruned: int

    @property
    def ratio(self) -> float:
        return self.pruned / self.dense if self.dense else float("nan")

    def to_dict(self) -> dict:
        return {"dense": self.dense, "pruned": self.pruned, "ratio": round(self.ratio, 4)}


@dataclass
class PruneReport:
    config: dict
    out: str = ""
    device: str = ""
    input_shape: list[int] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    val_accuracy: dict[str, float] | None = None
    macs: Counts | None = None
    params: Counts | None = None
    channels: dict = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    method: dict | None = None
    latency_aware: dict | None = None
    exports: dict[str, dict] = field(default_factory=dict)
    latency: dict | None = None
    trajectory: list | None = None  # [step, [log c per channel]] when record_every > 0 (not in report.json)

    def to_dict(self) -> dict:
        out = {"schema": SCHEMA, "created_utc": _now()}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "trajectory":
                continue
            out[f.name] = value.to_dict() if isinstance(value, Counts) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, data: dict) -> PruneReport:
        """A report read back from report.json (unknown keys ignored; a /1 report's "catalyst" is `method`)."""
        if "catalyst" in data and "method" not in data:
            data = {**data, "method": data["catalyst"]}
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for key in ("macs", "params"):
            if isinstance(values.get(key), dict):
                values[key] = Counts(values[key]["dense"], values[key]["pruned"])
        return cls(**values)


def load_report(path: str | Path) -> PruneReport:
    return PruneReport.from_dict(json.loads(Path(path).read_text()))


def bifurcation_margin(log_c, pruned) -> float | None:
    """min log c over pruned channels - max log c over kept ones (> 0: the prune set is a clean split)."""
    p = [v for v, m in zip(log_c, pruned) if m]
    k = [v for v, m in zip(log_c, pruned) if not m]
    if not p or not k:
        return None
    return min(p) - max(k)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
