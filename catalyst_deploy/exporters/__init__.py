"""Exporters: PyTorch -> ONNX, TensorRT engine, or a saved torch module, behind one registry.

`EXPORTERS` is the single table of formats (suffix, needs a GPU, pip extra, options). It validates
`--format` (with a "did you mean"), writes the CLI help, and dispatches `export_model`:

    result = export_model(model, "onnx", "out/model.onnx", torch.randn(1, 3, 224, 224), opset=17)
    result.max_abs_diff   # ONNX Runtime vs PyTorch on the same input

Importing this package is cheap: each exporter module is imported only when its format is used.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path

from catalyst_deploy.errors import UsageError, did_you_mean


@dataclass(frozen=True)
class ExporterSpec:
    """One row of the format table. `entry` is "module:function" with signature
    `function(model, example, path, **options) -> OutputCheck`."""

    name: str
    suffix: str
    needs_gpu: bool
    extra: str | None
    options: tuple[str, ...]
    summary: str
    entry: str


EXPORTERS: dict[str, ExporterSpec] = {spec.name: spec for spec in (
    ExporterSpec("onnx", ".onnx", False, None, ("opset", "dynamic_batch", "atol"),
                 "ONNX file, checked in ONNX Runtime against PyTorch",
                 "catalyst_deploy.exporters.onnx:torch_to_onnx"),
    ExporterSpec("trt", ".engine", True, "tensorrt",
                 ("precision", "min_batch", "opt_batch", "max_batch", "calib_loader", "calib_batches", "opset", "atol"),
                 "TensorRT engine (fp32/fp16/int8) built from ONNX, checked against PyTorch",
                 "catalyst_deploy.exporters.tensorrt:torch_to_engine"),
    ExporterSpec("torch", ".pt", False, None, ("plan", "atol"),
                 "whole module + state dict (+ plan.json), reloaded and checked",
                 "catalyst_deploy.exporters.torch:save_torch_module"),
)}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how closely it matches PyTorch."""

    path: Path
    fmt: str
    max_abs_diff: float
    atol: float
    seconds: float

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.fmt, "max_abs_diff": self.max_abs_diff,
                "atol": self.atol, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ExportOptions:
    """Export settings; None means the format's own default (defined once, in the exporter function).

    Only the fields a format lists in EXPORTERS may be set for it."""

    opset: int | None = None
    dynamic_batch: bool | None = None
    atol: float | None = None
    precision: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    calib_batches: int | None = None

    def for_format(self, fmt: str) -> dict:
        """The set fields as keyword options for `fmt`; UsageError for one the format does not take."""
        spec = get_exporter(fmt)
        chosen = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        _check_options(spec, chosen)
        return chosen


def get_exporter(name: str) -> ExporterSpec:
    """The registry row for `name`; UsageError with the closest name when there is none."""
    if name not in EXPORTERS:
        raise UsageError(f"unknown export format {name!r}{did_you_mean(name, EXPORTERS)}: "
                         f"expected one of {', '.join(EXPORTERS)}")
    return EXPORTERS[name]


def exporter_help() -> str:
    """One line per format for `--help`, generated from the registry."""
    lines = []
    for spec in EXPORTERS.values():
        needs = ", needs a CUDA GPU" if spec.needs_gpu else ""
        extra = f", pip extra {spec.extra}" if spec.extra else ""
        lines.append(f"{spec.name} ({spec.suffix}{needs}{extra}): {spec.summary}")
    return "; ".join(lines)


def output_paths(fmt: str, out: str | Path, with_plan: bool = False) -> list[Path]:
    """Every file an export to `fmt` at `out` writes (the torch format: module, state dict, and the plan
    when one is given)."""
    if get_exporter(fmt).name == "torch":
        from catalyst_deploy.exporters.torch import torch_artifact_paths

        return [p for key, p in torch_artifact_paths(out).items() if key != "plan" or with_plan]
    return [Path(out)]


def exporter_unavailable_reason(name: str) -> str | None:
    """Why `name` cannot export on this machine, or None when it can."""
    from catalyst_deploy.errors import MissingDependency

    if name == "trt":
        try:
            from catalyst_deploy.exporters.tensorrt import require_tensorrt

            require_tensorrt()
        except MissingDependency as err:
            return str(err)
    return None


def export_model(model, fmt: str, out_path: str | Path, example, **options) -> ExportResult:
    """Export `model` (an nn.Module, traced/checked on `example`, an N,C,H,W tensor) to `fmt` at `out_path`.

    `options` are the format's keyword options (EXPORTERS[fmt].options; None values mean "default").
    Every format checks its artifact against PyTorch and writes atomically.
    Raises UsageError (unknown format/option), MissingDependency, ExportValidationError, CatalystDeployError.
    """
    spec = get_exporter(fmt)
    options = {key: value for key, value in options.items() if value is not None}
    _check_options(spec, options)
    module_name, function_name = spec.entry.split(":")
    export_fn = getattr(importlib.import_module(module_name), function_name)
    start = time.perf_counter()
    check = export_fn(model, example, Path(out_path), **options)
    return ExportResult(Path(out_path), fmt, check.max_abs_diff, check.atol, time.perf_counter() - start)


def _check_options(spec: ExporterSpec, options: dict) -> None:
    for key in options:
        if key not in spec.options:
            raise UsageError(f"option {key!r} does not apply to format {spec.name!r}{did_you_mean(key, spec.options)} "
                             f"(it takes: {', '.join(spec.options)})")
