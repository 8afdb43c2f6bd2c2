"""The tables of export formats and benchmark backends: what each format is, how it is written and checked,
and which backends run it; what each backend is and which format it runs. Export (`--export`, `export
--format`), `env`, `bench`, the settings' validation and the README's format table all read them; how a
backend loads and times a model is `catalyst_deploy.bench.backends`'s.

    get_format("onnx").backends      # ('ort-cpu', 'ort-cuda', 'ort-trt')
    get_backend("ort-cpu").runs      # 'onnx'

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


@dataclass(frozen=True)
class BackendSpec:
    """One row of the backend table. `runs` names the format it executes (a row of `formats.FORMATS`)."""

    name: str
    runs: str
    needs_gpu: bool
    extra: str | None
    summary: str
    ort_provider: str | None = None


BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("ort-cpu", "onnx", False, None, "ONNX Runtime, CPU execution provider", "CPUExecutionProvider"),
    BackendSpec("ort-cuda", "onnx", True, None, "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)",
                "CUDAExecutionProvider"),
    BackendSpec("ort-trt", "onnx", True, None, "ONNX Runtime, TensorRT execution provider (onnxruntime-gpu)",
                "TensorrtExecutionProvider"),
    BackendSpec("trt", "trt", True, "tensorrt", "native TensorRT engine (built per batch from ONNX if needed)"),
    BackendSpec("torch", "torch", False, None, "PyTorch eager (CUDA when available, else CPU)"),
    BackendSpec("torch-cudagraph", "torch", True, None, "PyTorch, the forward pass replayed as one CUDA graph"),
)}


def get_backend(name: str) -> BackendSpec:
    """The registry row for `name`; UsageError with the closest name when there is none."""
    if name not in BACKENDS:
        raise UsageError(f"unknown benchmark backend {name!r}{did_you_mean(name, BACKENDS)}: "
                         f"expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_help() -> str:
    """One entry per backend for `--help`, generated from the registry."""
    return "; ".join(f"{s.name}: {s.summary}" + (", needs a CUDA GPU" if s.needs_gpu else "") for s in BACKENDS.values())


def load_entry(entry: str):
    import importlib

    module_name, function_name = entry.split(":")
    return getattr(importlib.import_module(module_name), function_name)
