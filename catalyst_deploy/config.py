"""Run settings: one frozen dataclass per run, filled from a recipe (YAML) plus command-line overrides.

Defaults live here and nowhere else (STYLE.md 6).

    cfg = load_config("fashion-mnist", model="zoo:small_resnet", target_flops="0.5")
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalyst_deploy.catalyst.controller import CatalystSettings
from catalyst_deploy.errors import UsageError, did_you_mean

RECIPE_DIR = Path(__file__).parent / "recipes"
_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@dataclass(frozen=True)
class FlopsTarget:
    """Either a share of the dense MACs (0 < fraction < 1) or an absolute MAC budget."""

    fraction: float | None = None
    absolute: float | None = None

    def macs(self, dense_macs: int) -> float:
        return self.fraction * dense_macs if self.fraction is not None else float(self.absolute)

    def __str__(self) -> str:
        return f"{self.fraction:g}" if self.fraction is not None else f"{self.absolute / 1e9:g}G"


def parse_flops_target(text: str | float) -> FlopsTarget:
    """'0.5' -> half the dense MACs; '2.0G' / '350M' -> an absolute budget. UsageError otherwise."""
    s = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGT]?)", s, flags=re.IGNORECASE)
    if not m:
        raise UsageError(f"--target-flops {s!r} is not a number: use a share such as 0.5 or a budget such as 2.0G")
    value, unit = float(m.group(1)), m.group(2).upper()
    if unit:
        if value <= 0:
            raise UsageError(f"--target-flops {s!r} must be a positive budget")
        return FlopsTarget(absolute=value * _UNITS[unit])
    if not 0 < value < 1:
        raise UsageError(f"--target-flops {s!r} must be a share strictly between 0 and 1 (e.g. 0.5), "
                         "or an absolute budget with a unit (e.g. 2.0G)")
    return FlopsTarget(fraction=value)


def parse_shape(text: str | tuple | None) -> tuple[int, ...] | None:
    """'1,3,224,224' -> (1, 3, 224, 224)."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r} must be comma-separated integers, e.g. 1,3,224,224") from None
    if len(shape) != 4 or min(shape) < 1:
        raise UsageError(f"--input-shape {text!r} must be N,C,H,W with positive sizes, e.g. 1,3,224,224")
    return shape


@dataclass(frozen=True)
class PruneConfig:
    """Everything a `prune` run needs. See recipes/*.yaml for per-family values."""

    model: str
    data: str = "demo"
    target_flops: str = "0.5"
    method: str = "catalyst"
    out: Path | None = None  # None: the first free runs/prune, runs/prune-2, ...
    overwrite: bool = False  # replace an earlier run of this tool in `out` (never other files)
    weights: str | None = None
    trust_pickle: bool = False
    input_shape: tuple[int, ...] | None = None  # N,C,H,W of the example input; default from the data
    ignore: tuple[str, ...] = ()
    round_to: int | None = 8
    max_layer_ratio: float = 0.9  # at most this share of any group's channels is removed
    pretrain_epochs: float = 0.0  # dense training before pruning (the demo starts from scratch)
    pretrain_lr: float = 0.1
    reg_epochs: float = 2.0  # regularized phase (Catalyst / group lasso / slimming; plain fine-tuning otherwise)
    recover_epochs: float = 2.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    steps_per_epoch: int | None = None  # cap for quick runs
    train_limit: int | None = None
    test_limit: int | None = None
    workers: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    catalyst: CatalystSettings = field(default_factory=CatalystSettings)
    export: tuple[str, ...] = ()
    bench: bool = False
    bench_batches: tuple[int, ...] = (1, 8)
    latency_aware: str | None = None  # a bench backend (ort-cpu): weigh channel groups by measured ms per MAC
    latency_alpha: float = 2.0
    record_every: int = 0  # >0: keep c of every channel every N steps (bifurcation trajectories)

    @property
    def target(self) -> FlopsTarget:
        return parse_flops_target(self.target_flops)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """Recipe values from recipes/NAME.yaml or a YAML file path."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise UsageError(f"recipe {name_or_path!r} not found{did_you_mean(name_or_path, list_recipes())}; "
                         f"bundled recipes: {', '.join(list_recipes())}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise UsageError(f"recipe {path} must be a mapping of setting: value")
    return values


def load_config(recipe: str | None = None, **overrides: Any) -> PruneConfig:
    """A PruneConfig from a recipe plus overrides (None overrides are ignored); validates everything."""
    values = read_recipe(recipe) if recipe else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r}{did_you_mean(unknown[0], fields)}")
    cat = values.pop("catalyst", None) or {}
    if isinstance(cat, dict):
        known = {f.name for f in dataclasses.fields(CatalystSettings)}
        bad = [k for k in cat if k not in known]
        if bad:
            raise UsageError(f"unknown catalyst setting {bad[0]!r}{did_you_mean(bad[0], known)}")
        cat = CatalystSettings(**cat)
    values["catalyst"] = cat
    for key in ("ignore", "export", "bench_batches"):
        if isinstance(values.get(key), str):
            values[key] = tuple(v for v in values[key].split(",") if v)
        elif values.get(key) is not None:
            values[key] = tuple(values[key])
    if "bench_batches" in values:
        try:
            values["bench_batches"] = tuple(int(b) for b in values["bench_batches"])
        except ValueError:
            raise UsageError("--bench-batch must be comma-separated integers, e.g. 1,8") from None
    if "out" in values:
        values["out"] = Path(values["out"])
    values["input_shape"] = parse_shape(values.get("input_shape"))
    if "model" not in values:
        raise UsageError("no model given: pass a model spec (file.pt, torchvision:NAME, pkg.mod:factory)")
    cfg = PruneConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: PruneConfig) -> None:
    cfg.target  # parses target_flops
    from catalyst_deploy.catalyst import METHODS

    if cfg.method not in METHODS:
        raise UsageError(f"unknown method {cfg.method!r}{did_you_mean(cfg.method, METHODS)}; "
                         f"choose from {', '.join(METHODS)}")
    if cfg.round_to is not None and cfg.round_to < 1:
        raise UsageError("--round-to must be >= 1")
    if not 0 < cfg.max_layer_ratio < 1:
        raise UsageError("--max-layer-ratio must be strictly between 0 and 1")
    if cfg.lr <= 0 or cfg.batch_size < 1:
        raise UsageError("--lr must be > 0 and --batch-size >= 1")
    if min(cfg.reg_epochs, cfg.recover_epochs, cfg.pretrain_epochs) < 0:
        raise UsageError("epoch counts must be >= 0")
    from catalyst_deploy.bench.backends import get_backend
    from catalyst_deploy.exporters import get_exporter

    for fmt in cfg.export:
        get_exporter(fmt)  # UsageError with a suggestion for a mistyped format
    if cfg.latency_aware:
        get_backend(cfg.latency_aware)
