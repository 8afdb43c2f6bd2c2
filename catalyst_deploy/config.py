"""Run settings: frozen dataclasses filled from a recipe (YAML) plus overrides, validated in one place.

Defaults live here and nowhere else: the CLI's help text reads them (`default_text`), recipes and the
Python API go through the same `load_config`, and `validate` checks types, ranges and finiteness for all
three. Importing this module loads no torch.

    cfg = load_config("fashion-mnist", model="zoo:small_resnet", target_flops="0.5")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalyst_deploy.errors import UsageError, did_you_mean
from catalyst_deploy.settings import (MAX_BENCH_BATCH, MAX_BENCH_RUNS, MAX_BENCH_SECONDS, build,
                                      default_text as _default_text, setting, shown)
from catalyst_deploy.targets import FlopsTarget, parse_flops_target, parse_latency_target

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class CatalystSettings:
    """Knobs of Catalyst in the paper's form (`--method catalyst`; docs/method.md says what each does and why it
    has its value). Its two ramps are given by what they add up to by the deadline, so the schedule adapts to
    the length of the phase."""

    placement: str = setting("bn", "what F is: 'bn' (each channel's BatchNorm scale and shift) or 'group' (every "
                                   "producer slice of the coupled group)", choices=("bn", "group"))
    bypass: str = setting("plus", "the catalyst's term in the forward pass: 'minus' or 'plus' (its sign: how the "
                                  "task gradient reaches delta) or 'none' (no task gradient to delta)",
                          choices=("minus", "plus", "none"))
    precondition: bool = setting(True, "scale the task gradient of F and delta by their size, so that a channel's "
                                       "magnitude does not change its dynamics (docs/method.md)")
    strength: float = setting(0.4, "sum of the proximal steps eta*lambda by the deadline", lo=0.0, lo_open=True)
    step_cap: float = setting(0.01, "largest proximal step eta*lambda (a short phase ends with the split as far as "
                                    "it got)", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    pressure: float = setting(0.0, "sum of the relative decay of F by the deadline (tips undefended channels "
                                    "to c > 1)", lo=0.0)
    c_hi: float = setting(1e3, "freeze once the channels at c >= c_hi (F ~ 0) cover the target", lo=1.0, lo_open=True)
    check_every: int = setting(10, "optimizer steps between two looks at the channels", lo=1)
    deadline: float = setting(0.5, "freeze at the latest after this share of the phase", lo=0.0, hi=1.0, lo_open=True)
    window_epochs: float = setting(1.0, "freeze at the latest after this many epochs too (0: deadline only)", lo=0.0)
    cost_aware: bool = setting(False, "weigh each channel's penalty by the MACs its removal saves")
    freeze_step: float = setting(0.05, "proximal step that drives the frozen prune set to zero", lo=0.0, hi=1.0,
                                 lo_open=True, hi_open=True)
    center: bool = setting(True, "at every check, scale every undecided delta by one factor so that the channels "
                                  "at c > 1 are the target's set (the model is untouched; docs/method.md)")
    center_groups: bool = setting(True, "with center: first level each group's undecided delta to mean log c = 0 "
                                         "(no layer is cut for a push weak in the whole layer; docs/method.md)")
    running_bn: bool = setting(False, "during the phase BatchNorm normalises with its running statistics (a sample's "
                                      "gradient then does not depend on its batch: ranks decide as one process)")
    rewind: bool = setting(True, "at a forced freeze, cut the set from the weights the phase started with (the "
                                  "dynamics pick the set, recovery starts undamaged; docs/method.md)")


@dataclass(frozen=True)
class GatedCatalystSettings:
    """Knobs of the gated Catalyst (`--method catalyst-gated`; docs/method.md). Step sizes are proximal steps per
    optimizer step (eta*lambda at the base learning rate)."""

    c0: float = setting(1.05, "c = d/|s| of every channel at the start (> 1: each must be defended)", lo=1.0)
    step0: float = setting(0.002, "initial proximal step eta*lambda", lo=0.0, lo_open=True)
    step_max: float = setting(0.2, "proximal step reached at the deadline", lo=0.0, lo_open=True)
    gate_lr: float = setting(1.0, "learning rate of the gates, as a multiple of --lr: how loud the task loss is "
                                   "against the penalty's clock (docs/method.md)", lo=0.0, lo_open=True)
    check_every: int = setting(5, "optimizer steps between two looks at the channels", lo=1)
    settle: float = setting(1.0, "once the collapsed channels cover the target, wait until at most this share of "
                                 "channels is undecided (1: freeze at once; waiting overshoots, docs/method.md)",
                            lo=0.0, hi=1.0)
    deadline: float = setting(0.6, "freeze at the latest after this share of the regularized phase", lo=0.0,
                              hi=1.0, lo_open=True)
    cost_aware: bool = setting(True, "weigh each channel's penalty by the MACs its removal saves")
    invariant: bool = setting(False, "during the phase, scale each consumer input column's gradient by its "
                                     "squared norm, so that the update commutes with a function-preserving "
                                     "rescale of a channel (docs/method.md)")
    restore: bool = setting(False, "give kept channels back their full scale at the freeze (measured harmful: "
                                   "BN scales grew to make up for the shrunk gates)")
    freeze_step: float = setting(0.2, "proximal step that drives channels added at the freeze to zero", lo=0.0,
                                 hi=1.0, lo_open=True, hi_open=True)


@dataclass(frozen=True)
class ExportSettings:
    """`--export` and its options; None: the format's own default (catalyst_deploy.exporters)."""

    formats: tuple[str, ...] = setting((), "formats to export the pruned model to")
    opset: int | None = setting(None, "ONNX opset", lo=7)
    precision: str | None = setting(None, "TensorRT precision", choices=("fp32", "fp16", "int8"))
    max_batch: int | None = setting(None, "largest batch of the TensorRT profile", lo=1)


@dataclass(frozen=True)
class BenchSettings:
    """`--bench`: dense against pruned latency after the export."""

    enabled: bool = setting(False, "benchmark dense vs pruned latency")
    batches: tuple[int, ...] = setting((1, 8), "batch sizes", lo=1, hi=MAX_BENCH_BATCH)
    threads: int | None = setting(None, "ONNX Runtime / torch CPU threads (None: the runtime's)", lo=1)
    min_time_s: float = setting(1.0, "least seconds of timed runs per model and batch", lo=0.0, hi=MAX_BENCH_SECONDS)
    min_runs: int = setting(20, "least timed runs per model and batch", lo=1, hi=MAX_BENCH_RUNS)


@dataclass(frozen=True)
class PruneConfig:
    """Everything a `prune` run needs. See recipes/*.yaml for per-family values."""

    model: str = setting("", "file.pt, torchvision:NAME, timm:NAME, zoo:NAME or pkg.module:factory")
    data: str = setting("demo", "dataset spec")
    target_flops: str = setting("0.5", "share of the dense MACs to keep at most (0.5), or a MAC budget (2.0G)")
    # the Catalyst form that measured best is the default (docs/method.md, "Which form is the default")
    method: str = setting("catalyst", "pruning method")
    out: Path | None = setting(None, "output folder (None: the first free runs/prune, runs/prune-2, ...)")
    overwrite: bool = setting(False, "replace an earlier run of this tool in `out`")
    resume: bool = setting(False, "continue the interrupted run in `out` from its last checkpoint")
    weights: str | None = setting(None, "state dict file to load into the model")
    trust_pickle: bool = setting(False, "allow model files that need classes outside the allowlist")
    input_shape: tuple[int, ...] | None = setting(None, "N,C,H,W of the example input (None: from the data)")
    ignore: tuple[str, ...] = setting((), "module names whose channels stay whole")
    round_to: int | None = setting(8, "keep channel counts multiples of this", lo=1)
    max_layer_ratio: float = setting(0.9, "remove at most this share of any group's channels", lo=0.0, hi=1.0,
                                     lo_open=True, hi_open=True)
    prune_embedding: bool = setting(False, "also prune a transformer's embedding width, coupled through every "
                                           "LayerNorm and residual add of its stage (docs/transformers.md)")
    pretrain_epochs: float = setting(0.0, "dense training before pruning", lo=0.0)
    pretrain_lr: float = setting(0.1, "learning rate of the dense training", lo=0.0, hi=1e6, lo_open=True)
    reg_epochs: float = setting(2.0, "epochs of the regularized phase (fine-tuning for one-shot methods)", lo=0.0)
    recover_epochs: float = setting(2.0, "epochs of recovery fine-tuning after the cut", lo=0.0)
    lr: float = setting(0.01, "learning rate", lo=0.0, hi=1e6, lo_open=True)
    momentum: float = setting(0.9, "SGD momentum", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = setting(5e-4, "weight decay", lo=0.0)
    batch_size: int = setting(128, "batch size", lo=1)
    steps_per_epoch: int | None = setting(None, "cap steps per epoch (quick runs)", lo=1)
    train_limit: int | None = setting(None, "train on a fixed subset of this many images", lo=1)
    test_limit: int | None = setting(None, "evaluate on a fixed subset of this many images", lo=1)
    val_size: int = setting(0, "hold this many training images out as a validation split", lo=0)
    workers: int = setting(0, "data loader worker processes", lo=0)
    threads: int | None = setting(None, "torch CPU threads (None: one per core)", lo=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = setting(True, "mixed precision on CUDA")
    seed: int = setting(0, "random seed", lo=0)
    reg_strength: float | None = setting(None, "penalty strength of group-lasso / slimming (None: 1e-4)", lo=0.0)
    latency_aware: str | None = setting(None, "weigh layers by measured latency per MAC on this backend")
    latency_alpha: float = setting(2.0, "exponent of the latency weights", lo=0.0)
    checkpoint_every: int = setting(200, "optimizer steps between checkpoints (0: phase ends only)", lo=0)
    sync_bn: bool = setting(False, "under torchrun: synchronise BatchNorm statistics across ranks (SyncBatchNorm)")
    dist_timeout_s: float = setting(600.0, "under torchrun: a collective's longest wait, then every rank stops", lo=1.0)
    target_latency: str | None = setting(None, "latency target instead of FLOPs: a share of the dense latency "
                                               "(0.6x) or an absolute time at a batch (3ms, 3ms@8)")
    latency_backend: str = setting("ort-cpu", "backend on which --target-latency is measured")
    record_every: int = setting(0, "keep c of every channel every N steps (0: never)", lo=0)
    catalyst: CatalystSettings = setting(None, "Catalyst's schedule", factory=CatalystSettings)
    catalyst_gated: GatedCatalystSettings = setting(None, "the gated Catalyst's schedule",
                                                    factory=GatedCatalystSettings)
    export: ExportSettings = setting(None, "export after the cut", factory=ExportSettings)
    bench: BenchSettings = setting(None, "benchmark after the export", factory=BenchSettings)

    @property
    def target(self) -> FlopsTarget:
        return parse_flops_target(self.target_flops)


def _prune_default(name: str):
    return PruneConfig.__dataclass_fields__[name].default


@dataclass(frozen=True)
class CheckConfig:
    """`check`: what a model offers to pruning, without data or training. The limits are prune's."""

    model: str = setting("", "file.pt, torchvision:NAME, timm:NAME, zoo:NAME or pkg.module:factory")
    input_shape: tuple[int, ...] = setting((1, 3, 224, 224), "N,C,H,W of the example input")
    weights: str | None = setting(None, "state dict file to load into the model")
    trust_pickle: bool = setting(False, "allow model files that need classes outside the allowlist")
    num_classes: int | None = setting(None, "classes of torchvision/timm models (None: their default)", lo=1)
    target_flops: str = setting(_prune_default("target_flops"), "MACs target of the trial cut")
    ignore: tuple[str, ...] = setting((), "module names whose channels stay whole")
    round_to: int | None = setting(_prune_default("round_to"), "keep channel counts multiples of this", lo=1)
    max_layer_ratio: float = setting(_prune_default("max_layer_ratio"), "remove at most this share of any "
                                     "group's channels", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    prune_embedding: bool = setting(False, "also prune a transformer's embedding width")
    bench: bool = setting(False, "time the trial cut against the dense model on ONNX Runtime CPU")
    bench_min_time_s: float = setting(1.0, "least seconds of timed runs per model with bench", lo=0.0)
    threads: int | None = setting(None, "torch and ONNX Runtime CPU threads (None: torch 1, ONNX Runtime its "
                                        "default)", lo=1)

    @property
    def target(self) -> FlopsTarget:
        return parse_flops_target(self.target_flops)


def load_check_config(**values: Any) -> CheckConfig:
    """A CheckConfig from keyword values (None values are ignored); validates everything."""
    cfg = build(CheckConfig, {k: v for k, v in values.items() if v is not None})
    if not cfg.model:
        raise UsageError("no model given: pass a model spec (file.pt, torchvision:NAME, pkg.mod:factory)")
    if len(cfg.input_shape) != 4:
        raise UsageError(f"--input-shape must be N,C,H,W, e.g. 1,3,224,224; got {','.join(map(str, cfg.input_shape))}")
    parse_flops_target(cfg.target_flops)
    return cfg


SECTIONS = {"catalyst": CatalystSettings, "catalyst_gated": GatedCatalystSettings, "export": ExportSettings,
            "bench": BenchSettings}
# flat names the CLI uses for settings that live in a section
FLAT_ALIASES = {"bench_batches": ("bench", "batches"), "export_formats": ("export", "formats")}


def parse_int_tuple(text, option: str, length: int | None = None) -> tuple[int, ...] | None:
    """'1,3,224,224' (or a sequence) -> (1, 3, 224, 224); UsageError for anything else."""
    if text is None or text == "":
        return None
    parts = str(text).replace("x", ",").split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{option} takes comma-separated integers, e.g. 1,3,224,224; got {text!r}") from None
    if (length and len(values) != length) or not values or min(values) < 1:
        want = f"{length} " if length else ""
        raise UsageError(f"{option} must be {want}positive integers, e.g. 1,3,224,224; got {text!r}")
    return values


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """Recipe values from recipes/NAME.yaml or a YAML file path; UsageError when missing or not a mapping."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UsageError(f"recipe {name_or_path!r} not found{did_you_mean(name_or_path, list_recipes())}; "
                         f"bundled recipes: {', '.join(list_recipes())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise UsageError(f"recipe {path} is not readable YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UsageError(f"recipe {path} must be a mapping of setting: value")
    return values


def load_config(recipe: str | None = None, **overrides: Any) -> PruneConfig:
    """A PruneConfig from a recipe plus overrides (None overrides are ignored); validates everything."""
    values = read_recipe(recipe) if recipe else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    sections = {}
    for name in SECTIONS:
        section = values.pop(name, None)
        if section is not None and not isinstance(section, dict):
            raise UsageError(f"recipe setting {name!r} must be a mapping of its own settings (e.g. {name}: "
                             f"{{{dataclasses.fields(SECTIONS[name])[0].name}: ...}}), got {shown(section)}")
        sections[name] = dict(section or {})
    for key, value in list(given.items()):
        if key in FLAT_ALIASES:
            section, name = FLAT_ALIASES[key]
            sections[section][name] = given.pop(key)
        elif key in ("export", "bench") and not isinstance(value, dict):  # --export onnx,trt / --bench
            sections[key]["formats" if key == "export" else "enabled"] = given.pop(key)
        elif key in SECTIONS and not isinstance(value, dict):
            raise UsageError(f"setting {key!r} must be a mapping of its own settings, got {shown(value)}")
        elif key in SECTIONS:
            sections[key].update(given.pop(key))
    values.update(given)
    built = {name: build(cls, sections[name], f"{name}.") for name, cls in SECTIONS.items()}
    cfg = build(PruneConfig, {**values, **built})
    if not cfg.model:
        raise UsageError("no model given: pass a model spec (file.pt, torchvision:NAME, pkg.mod:factory)")
    _check_names(cfg)
    return cfg


def _check_names(cfg: PruneConfig) -> None:
    """The settings that name things: target, method, formats, backend, shape (all without torch)."""
    from catalyst_deploy.formats import get_backend, get_format
    from catalyst_deploy.method_table import get_method

    parse_flops_target(cfg.target_flops)
    get_method(cfg.method)
    for fmt in cfg.export.formats:
        get_format(fmt)  # UsageError with a suggestion for a mistyped format
    if cfg.latency_aware:
        get_backend(cfg.latency_aware)
    if cfg.target_latency is not None:
        parse_latency_target(cfg.target_latency)
        get_backend(cfg.latency_backend)
    if cfg.input_shape is not None and len(cfg.input_shape) != 4:
        raise UsageError(f"--input-shape must be N,C,H,W, e.g. 1,3,224,224; got {','.join(map(str, cfg.input_shape))}")


def default_text(name: str, cls=None) -> str:
    """A setting's default as the CLI help shows it (defaults live in the dataclasses, once)."""
    return _default_text(name, cls or PruneConfig)
