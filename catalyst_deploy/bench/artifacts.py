"""What a benchmark runs: a model given as an ONNX file, a TensorRT engine, a .pt file or an nn.Module,
converted on demand (module -> ONNX -> engine) into the form each backend needs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from catalyst_deploy.errors import UsageError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")


@dataclass
class ModelArtifact:
    """One model under test. `role` is "baseline" (dense) or "pruned"; `source` says where it came from.

    Conversions made for a backend are cached on the object (ONNX once; one engine per batch/precision).
    """

    role: str
    source: str
    module: Any = None
    onnx_path: Path | None = None
    engine_path: Path | None = None
    built_engines: dict = field(default_factory=dict)

    def kind(self) -> str:
        return "module" if self.module is not None else "onnx" if self.onnx_path else "engine"


def load_artifact(model, role: str, trust_pickle: bool = False) -> ModelArtifact:
    """Wrap an nn.Module, or open a model file by suffix (.onnx, .engine/.trt/.plan, else a PyTorch file
    loaded with `catalyst_deploy.inputs.models.load_model`). UsageError for a missing file."""
    if not isinstance(model, (str, Path)):
        return ModelArtifact(role, type(model).__name__, module=model)
    path = Path(model).expanduser()
    if not path.is_file():
        raise UsageError(f"{role} model file not found: {model}")
    if path.suffix.lower() in ONNX_SUFFIXES:
        return ModelArtifact(role, str(path), onnx_path=path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return ModelArtifact(role, str(path), engine_path=path)
    from catalyst_deploy.inputs.models import load_model

    return ModelArtifact(role, str(path), module=load_model(str(path), trust_pickle=trust_pickle))


def sample_shape_of(artifacts: Sequence[ModelArtifact], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-image input shape (C, H, W): from `input_shape` (a leading batch axis is dropped), else read
    from the first ONNX file or engine. UsageError when only PyTorch models were given without a shape."""
    if input_shape:
        return tuple(input_shape[1:]) if len(input_shape) == 4 else tuple(input_shape)
    for artifact in artifacts:
        if artifact.onnx_path:
            from catalyst_deploy.exporters.onnx import onnx_sample_shape

            return onnx_sample_shape(artifact.onnx_path)
    for artifact in artifacts:
        if artifact.engine_path:
            from catalyst_deploy.exporters.tensorrt_runtime import EngineRunner

            return EngineRunner(artifact.engine_path).sample_shape
    raise UsageError("cannot infer the input shape of a PyTorch model: give it (CLI: --input-shape 1,3,224,224)")


def onnx_for(artifact: ModelArtifact, sample_shape: Sequence[int], workdir: Path) -> Path:
    """The artifact as an ONNX file with a dynamic batch axis, exported (and checked) on first use."""
    if artifact.onnx_path is None:
        if artifact.module is None:
            raise UsageError(f"this backend runs ONNX, and {artifact.source} is a TensorRT engine")
        from catalyst_deploy.exporters.onnx import torch_to_onnx
        from catalyst_deploy.exporters.validation import random_input

        module = artifact.module
        if next(module.parameters()).device.type != "cpu":
            module = copy.deepcopy(module).cpu()  # export on the CPU without moving the caller's model
        path = workdir / f"{artifact.role}.onnx"
        torch_to_onnx(module, random_input((1, *sample_shape)), path)
        artifact.onnx_path = path
    return artifact.onnx_path


def engine_for(artifact: ModelArtifact, sample_shape: Sequence[int], batch: int, precision: str,
               workdir: Path) -> Path:
    """The artifact as a TensorRT engine: the given one, or one built from ONNX for exactly this batch
    (min = opt = max, so TensorRT picks its kernels for the batch being timed)."""
    if artifact.engine_path is not None:
        return artifact.engine_path
    key = (batch, precision)
    if key not in artifact.built_engines:
        from catalyst_deploy.exporters.tensorrt import onnx_to_engine

        path = workdir / f"{artifact.role}-b{batch}-{precision}.engine"
        onnx_to_engine(onnx_for(artifact, sample_shape, workdir), path, precision=precision,
                       min_batch=batch, opt_batch=batch, max_batch=batch)
        artifact.built_engines[key] = path
    return artifact.built_engines[key]


def module_for(artifact: ModelArtifact):
    """The artifact's nn.Module; UsageError for ONNX files and engines (they cannot go back to PyTorch)."""
    if artifact.module is None:
        raise UsageError(f"this backend runs PyTorch models, and {artifact.source} is not one (.pt or nn.Module)")
    return artifact.module
