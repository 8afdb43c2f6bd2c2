"""The one table of formats: what each export format is, how it is written and checked, and which
benchmark backends run it. Export (`--export`, `export --format`), `env`, `bench` and the README's format
table all read it; `catalyst_deploy.bench.backends.BACKENDS` names each backend's format by this table.

    get_format("onnx").backends      # ('ort-cpu', 'ort-cuda', 'ort-trt')

Importing this module is cheap: the exporters and validators are named by "module:function" and imported
only when used.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalyst_deploy.errors import UsageError, did_you_mean

DEFAULT_OPSET = 18  # what torch's torch.export-based exporter writes (it does not down-convert)


@dataclass(frozen=True)
class Format:
    """One row: `exporter(model, example, path, **options) -> OutputCheck` writes and checks a file;
    `validator(model, path, example) -> OutputCheck` checks an existing file against a PyTorch model."""

    name: str
    suffix: str
    summary: str
    exporter: str
    validator: str
    backends: tuple[str, ...]
    options: tuple[str, ...]
    needs_gpu: bool = False
    extra: str | None = None


FORMATS: dict[str, Format] = {row.name: row for row in (
    Format("onnx", ".onnx", "ONNX file (torch.export-based exporter, TorchScript fallback), checked in ONNX Runtime",
           "catalyst_deploy.exporters.onnx:torch_to_onnx", "catalyst_deploy.exporters.onnx:check_onnx_file",
           ("ort-cpu", "ort-cuda", "ort-trt"), ("opset", "dynamic_batch", "atol", "exporter", "metadata")),
    Format("trt", ".engine", "TensorRT engine (fp32/fp16/int8) built from ONNX, with a dynamic batch profile",
           "catalyst_deploy.exporters.tensorrt:torch_to_engine", "catalyst_deploy.exporters.tensorrt:check_engine_file",
           ("trt",), ("precision", "min_batch", "opt_batch", "max_batch", "calib_loader", "calib_batches", "opset", "atol"),
           needs_gpu=True, extra="tensorrt"),
    Format("torch", ".pt", "whole module + state dict (+ plan.json), reloaded and checked",
           "catalyst_deploy.exporters.torch:save_torch_module", "catalyst_deploy.exporters.torch:check_torch_file",
           ("torch", "torch-cudagraph"), ("plan", "atol")),
)}


def get_format(name: str) -> Format:
    """The row for `name`; UsageError with the closest name when there is none."""
    if name not in FORMATS:
        raise UsageError(f"unknown export format {name!r}{did_you_mean(name, FORMATS)}: expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_file(path) -> Format | None:
    """The format whose suffix `path` has (.engine/.trt/.plan count as trt), or None."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    suffix = ".engine" if suffix in (".trt", ".plan") else ".pt" if suffix in (".pth",) else suffix
    return next((row for row in FORMATS.values() if row.suffix == suffix), None)


def format_help() -> str:
    """One entry per format for `--help`."""
    return "; ".join(f"{row.name} ({row.suffix}{', needs a CUDA GPU' if row.needs_gpu else ''}"
                     f"{f', pip extra {row.extra}' if row.extra else ''}): {row.summary}" for row in FORMATS.values())


def formats_markdown() -> str:
    """The README's table of formats."""
    lines = ["| format | file | what | benchmarked on | needs |", "|---|---|---|---|---|"]
    for row in FORMATS.values():
        needs = ", ".join(x for x in ("a CUDA GPU" if row.needs_gpu else "", f"`.[{row.extra}]`" if row.extra else "") if x)
        lines.append(f"| `{row.name}` | `{row.suffix}` | {row.summary} | {', '.join(row.backends)} | {needs or '-'} |")
    return "\n".join(lines)


def load_entry(entry: str):
    import importlib

    module_name, function_name = entry.split(":")
    return getattr(importlib.import_module(module_name), function_name)
