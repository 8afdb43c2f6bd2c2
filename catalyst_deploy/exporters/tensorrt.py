"""ONNX -> TensorRT engine (TensorRT 10 Python API), checked against PyTorch or ONNX Runtime.

Buffers are torch CUDA tensors handed to the engine by address (`set_tensor_address` +
`execute_async_v3` on a torch stream): no pycuda, no cuda-python. Without the tensorrt package or a CUDA
GPU every entry point raises MissingDependency with one line saying which is missing.

    check = torch_to_engine(model, torch.randn(1, 3, 224, 224), "model.engine", precision="fp16")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from collections.abc import Iterable, Sequence

from catalyst_deploy.errors import CatalystDeployError, UsageError
from catalyst_deploy.atomic import atomic_path
from catalyst_deploy.exporters.validation import OutputCheck, check_outputs, random_input
from catalyst_deploy.exporters.tensorrt_runtime import INSTALL_HINT, require_tensorrt  # noqa: F401 (re-exported)
from catalyst_deploy.formats import DEFAULT_OPSET

PRECISIONS = ("fp32", "fp16", "int8")
# Default tolerances (scaled by the output magnitude above 1, see validation.check_outputs). fp32 is
# strict fp32 (TF32 is switched off below); fp16 and int8 are loose by nature: pass --atol to tighten.
DEFAULT_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}
DEFAULT_CALIBRATION_BATCHES = 16


def torch_to_engine(model, example, path: str | Path, *, precision: str = "fp16", min_batch: int = 1,
                    opt_batch: int | None = None, max_batch: int = 32, calib_loader: Iterable | None = None,
                    calib_batches: int = DEFAULT_CALIBRATION_BATCHES, opset: int = DEFAULT_OPSET,
                    atol: float | None = None) -> OutputCheck:
    """PyTorch -> ONNX (temp file, itself checked) -> TensorRT engine at `path`, checked against PyTorch
    at batch `min_batch` and `max_batch`. See `onnx_to_engine` for the options; raises what it raises."""
    require_tensorrt()
    from catalyst_deploy.exporters.onnx import eval_mode, run_torch, torch_to_onnx

    _check_batch_range(min_batch, opt_batch, max_batch)
    with tempfile.TemporaryDirectory(prefix="catalyst-deploy-trt-") as workdir, eval_mode(model):
        onnx_path = Path(workdir) / "model.onnx"
        torch_to_onnx(model, example, onnx_path, opset=opset, dynamic_batch=True)
        reference = []
        for seed, batch in enumerate(sorted({min_batch, max_batch})):
            x = random_input((batch, *example.shape[1:]), seed=seed)
            reference.append((x, run_torch(model, x.to(example.device))))
        return onnx_to_engine(onnx_path, path, precision=precision, min_batch=min_batch, opt_batch=opt_batch,
                              max_batch=max_batch, calib_loader=calib_loader, calib_batches=calib_batches,
                              atol=atol, reference=reference)


def onnx_to_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp16",
                   min_batch: int = 1, opt_batch: int | None = None, max_batch: int = 32,
                   calib_loader: Iterable | None = None, calib_batches: int = DEFAULT_CALIBRATION_BATCHES,
                   workspace_gib: float = 4.0, atol: float | None = None,
                   reference: Sequence[tuple] | None = None) -> OutputCheck:
    """Build a TensorRT engine from an ONNX file and serialize it to `engine_path` (atomically).

    `precision`: fp32 (TF32 off), fp16, or int8 (fp16 fallback; calibrated with the entropy calibrator on
    up to `calib_batches` batches of `calib_loader`, which yields image tensors or (images, labels)).
    A dynamic batch axis gets one optimization profile min/opt/max = `min_batch`/`opt_batch` (default
    `max_batch`)/`max_batch`. The engine is then run on `reference` [(input, expected outputs), ...], or,
    without it, on random inputs that ONNX Runtime (CPU) runs too; the tolerance is `atol` (default per
    precision, DEFAULT_ATOL).

    Raises MissingDependency (no tensorrt / no GPU), UsageError (bad precision or batch range, int8
    without data), CatalystDeployError (parse or build failure), ExportValidationError (mismatch).
    """
    trt = require_tensorrt()
    if precision not in PRECISIONS:
        raise UsageError(f"unknown TensorRT precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and calib_loader is None:
        raise UsageError("int8 needs calibration data: pass calib_loader (CLI: --data)")
    opt_batch = _check_batch_range(min_batch, opt_batch, max_batch)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(build_serialized_engine(trt, onnx_path, precision, (min_batch, opt_batch, max_batch),
                                                calib_loader, calib_batches, workspace_gib))
        if reference is None:
            reference = _onnxruntime_reference(onnx_path, sorted({min_batch, max_batch}))
        return validate_engine(tmp, reference, DEFAULT_ATOL[precision] if atol is None else atol)


def build_serialized_engine(trt, onnx_path, precision: str, batch_range: tuple[int, int, int],
                            calib_loader=None, calib_batches: int = DEFAULT_CALIBRATION_BATCHES,
                            workspace_gib: float = 4.0) -> bytes:
    """Parse the ONNX file and build a serialized engine; returns its bytes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the EXPLICIT_BATCH flag is deprecated and ignored).
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CatalystDeployError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    _set_precision(trt, config, precision)
    _add_batch_profile(builder, network, config, batch_range)
    if precision == "int8":
        from catalyst_deploy.exporters.tensorrt_runtime import make_entropy_calibrator

        calibrator, calib_shape = make_entropy_calibrator(trt, calib_loader, calib_batches)
        config.int8_calibrator = calibrator
        _add_calibration_profile(builder, network, config, calib_shape)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CatalystDeployError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    return bytes(serialized)


def check_engine_file(model, path: str | Path, example, atol: float | None = None) -> OutputCheck:
    """An existing engine against `model` on `example` (the format table's validator); fp16 tolerance
    unless `atol` is given."""
    from catalyst_deploy.exporters.onnx import run_torch

    return validate_engine(path, [(example, run_torch(model.eval(), example))], DEFAULT_ATOL["fp16"] if atol is None else atol)


def validate_engine(engine_path, reference: Sequence[tuple], atol: float) -> OutputCheck:
    """Run the engine on each (input, expected outputs) pair; the worst check, or ExportValidationError."""
    import torch

    from catalyst_deploy.exporters.tensorrt_runtime import EngineRunner

    runner = EngineRunner(engine_path)
    checks = []
    for x, expected in reference:
        outputs = runner(x.to("cuda"))
        torch.cuda.synchronize()
        checks.append(check_outputs("trt", expected, outputs, atol))
    return max(checks, key=lambda check: check.max_abs_diff)


def _set_precision(trt, config, precision: str) -> None:
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # "fp32" means fp32: TF32 would loosen the check silently
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


def _add_batch_profile(builder, network, config, batch_range: tuple[int, int, int]) -> None:
    """One optimization profile over the batch axis when it is dynamic (-1); static inputs need none."""
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if shape[0] != -1:
        return
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, *[(batch, *shape[1:]) for batch in batch_range])
    config.add_optimization_profile(profile)


def _add_calibration_profile(builder, network, config, calib_shape: tuple[int, ...]) -> None:
    tensor = network.get_input(0)
    if tuple(tensor.shape)[0] != -1:
        return
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, calib_shape, calib_shape, calib_shape)
    config.set_calibration_profile(profile)


def _onnxruntime_reference(onnx_path, batches: Sequence[int]) -> list[tuple]:
    """[(random input, ONNX Runtime CPU outputs)] per batch: the reference when no PyTorch model is at hand."""
    from catalyst_deploy.exporters.onnx import INPUT_NAME, onnx_sample_shape, open_ort_session

    session = open_ort_session(onnx_path)
    sample_shape = onnx_sample_shape(onnx_path)
    pairs = []
    for seed, batch in enumerate(batches):
        x = random_input((batch, *sample_shape), seed=seed)
        pairs.append((x, session.run(None, {INPUT_NAME: x.numpy()})))
    return pairs


def _check_batch_range(min_batch: int, opt_batch: int | None, max_batch: int) -> int:
    opt_batch = max_batch if opt_batch is None else opt_batch
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UsageError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    return opt_batch
