"""Exporters: PyTorch -> ONNX, TensorRT engine, or a saved torch module, dispatched through the format
table (`catalyst_deploy.formats.FORMATS`: suffix, options, exporter, validator, backends):

    result = export_model(model, "onnx", "out/model.onnx", torch.randn(1, 3, 224, 224))
    result.max_abs_diff   # ONNX Runtime vs PyTorch on the same input

May import the layers below it (docs/architecture.md): `surgery`, `inputs`, `render`, the settings layer,
`errors`, `atomic`. Never `bench` or anything above. Importing this package is cheap: each exporter module is
imported only when its format is used.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from catalyst_deploy.errors import UsageError, did_you_mean
from catalyst_deploy.formats import Format, get_format, load_entry


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

    Only the fields a format lists in `formats.FORMATS` may be set for it."""

    opset: int | None = None
    dynamic_batch: bool | None = None
    exporter: str | None = None
    atol: float | None = None
    precision: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    calib_batches: int | None = None

    def for_format(self, fmt: str) -> dict:
        """The set fields as keyword options for `fmt`; UsageError for one the format does not take."""
        spec = get_format(fmt)
        chosen = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        _check_options(spec, chosen)
        return chosen


def output_paths(fmt: str, out: str | Path, with_plan: bool = False) -> list[Path]:
    """Every file an export to `fmt` at `out` writes (the torch format: module, state dict, and the plan
    when one is given)."""
    if get_format(fmt).name == "torch":
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

    `options` are the format's keyword options (FORMATS[fmt].options; None values mean "default").
    Every format checks its artifact against PyTorch and writes atomically.
    Raises UsageError (unknown format/option), MissingDependency, ExportValidationError, CatalystDeployError.
    """
    spec = get_format(fmt)
    options = {key: value for key, value in options.items() if value is not None}
    _check_options(spec, options)
    export_fn = load_entry(spec.exporter)
    start = time.perf_counter()
    check = export_fn(model, example, Path(out_path), **options)
    return ExportResult(Path(out_path), fmt, check.max_abs_diff, check.atol, time.perf_counter() - start)


def _check_options(spec: Format, options: dict) -> None:
    for key in options:
        if key not in spec.options:
            raise UsageError(f"option {key!r} does not apply to format {spec.name!r}{did_you_mean(key, spec.options)} "
                             f"(it takes: {', '.join(spec.options)})")
