"""PyTorch -> ONNX, checked by onnx.checker and by ONNX Runtime against PyTorch on the same input.

    check = torch_to_onnx(model, torch.randn(1, 3, 224, 224), "model.onnx")   # raises if ORT disagrees
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from collections.abc import Sequence

from catalyst_deploy.atomic import atomic_path
from catalyst_deploy.errors import CatalystDeployError
from catalyst_deploy.exporters.validation import OutputCheck, as_output_list, check_outputs, random_input
from catalyst_deploy.formats import DEFAULT_OPSET

log = logging.getLogger(__name__)
EXPORTERS = ("dynamo", "torchscript")  # torch.export-based (default), the legacy TorchScript tracer
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Extra batch checked when the batch axis is dynamic: a batch other than the traced one proves the axis works.
EXTRA_CHECK_BATCH = 2
# An ONNX file is one protobuf message, which cannot exceed 2 GiB; this exporter writes no external data.
PROTOBUF_LIMIT_BYTES = 2**31


class OnnxRuntimeFailure(CatalystDeployError):
    """ONNX Runtime could not run the exported file at all (as opposed to running it with other numbers)."""


def torch_to_onnx(model, example, path: str | Path, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                  atol: float = 1e-4, exporter: str = "dynamo", metadata: dict | None = None) -> OutputCheck:
    """Export `model` (traced on `example`, an N,C,H,W tensor) to an ONNX file at `path`.

    `exporter` "dynamo" is torch's torch.export-based exporter; when it fails the TorchScript exporter is
    used instead and the reason is logged ("torchscript" asks for it directly). Input is named ``input``,
    output(s) ``output`` (``output1``, ...); the batch axis is dynamic unless `dynamic_batch` is False.
    `metadata` (text values) goes into the file's metadata_props, with the exporter used. The file is
    checked with ``onnx.checker`` and run in ONNX Runtime (CPU) against PyTorch on random inputs of the
    example's batch and, when dynamic, a second batch. Written atomically: on failure nothing is left.

    Returns the largest absolute difference seen. Raises ExportValidationError when it exceeds `atol`,
    CatalystDeployError when both exporters or the checker fail.
    """
    import onnx

    if exporter not in EXPORTERS:
        raise CatalystDeployError(f"unknown ONNX exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    check_onnx_size(model)
    with atomic_path(path) as tmp, eval_mode(model):
        output_names = _output_names(model, example)
        used = _export(model, example, tmp, opset, dynamic_batch, output_names, exporter)
        try:
            return _check_written(model, tmp, example, dynamic_batch, atol, {**(metadata or {}), "exporter": used})
        except OnnxRuntimeFailure as err:
            if used != "dynamo":
                raise
            log.warning("the torch.export-based ONNX file does not run in ONNX Runtime (%s); using the TorchScript "
                        "exporter", err)
        _torch_onnx_export(model, example, tmp, opset, dynamic_batch, output_names, dynamo=False)
        return _check_written(model, tmp, example, dynamic_batch, atol, {**(metadata or {}), "exporter": "torchscript"})


def _check_written(model, path: Path, example, dynamic_batch: bool, atol: float, metadata: dict) -> OutputCheck:
    """Metadata into the written file, then onnx.checker and ONNX Runtime against PyTorch."""
    import onnx

    _write_metadata(path, metadata)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise CatalystDeployError(f"onnx.checker rejected the export: {_first_line(err)}") from err
    return validate_onnx(model, path, example, dynamic_batch, atol)


def check_onnx_size(model) -> None:
    """CatalystDeployError when `model`'s weights alone exceed what one ONNX file can hold (2 GiB)."""
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if size >= PROTOBUF_LIMIT_BYTES:
        raise CatalystDeployError(f"the model's weights take {size / 2**30:.2f} GiB, and an ONNX file holds at most "
                                  "2 GiB (protobuf; this exporter writes no external data): export the torch format, "
                                  "or prune it first and export the smaller model")


def check_onnx_file(model, path: str | Path, example, atol: float = 1e-4) -> OutputCheck:
    """An existing ONNX file against `model` on the same random inputs (the format table's validator)."""
    return validate_onnx(model, path, example, dynamic_batch=_has_dynamic_batch(path), atol=atol)


def _export(model, example, path: Path, opset: int, dynamic_batch: bool, output_names: list[str], exporter: str) -> str:
    """Write the ONNX file with `exporter`, falling back from dynamo to torchscript; returns the one used."""
    if exporter == "dynamo":
        try:
            _torch_onnx_export(model, example, path, opset, dynamic_batch, output_names, dynamo=True)
            written = _opset_of(path)
            if written == opset:
                return "dynamo"
            log.warning("the torch.export-based exporter wrote opset %s, not %s; using the TorchScript exporter",
                        written, opset)
        except Exception as err:  # an op torch.export cannot capture: the legacy tracer often can
            log.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter", _first_line(err))
    _torch_onnx_export(model, example, path, opset, dynamic_batch, output_names, dynamo=False)
    return "torchscript"


def _torch_onnx_export(model, example, path: Path, opset: int, dynamic_batch: bool, output_names: list[str],
                       dynamo: bool) -> None:
    import warnings

    import torch

    axes = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]} if dynamic_batch else None
    options = dict(external_data=False) if dynamo else dict(do_constant_folding=True)
    example = _traced_example(example, dynamic_batch and dynamo)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
            warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning, tracer warnings
            torch.onnx.export(model, (example,), str(path), dynamo=dynamo, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=axes, **options)
    except Exception as err:
        raise CatalystDeployError(f"torch.onnx.export ({'dynamo' if dynamo else 'torchscript'}) failed: "
                                  f"{_first_line(err)}") from err


def _traced_example(example, dynamic_batch: bool):
    """The input torch.export traces: torch.export turns a dimension traced at size 1 into the constant 1, so
    a batch axis traced at 1 can come out baked into a Reshape (torchvision's vit_b_16 then fails in ONNX
    Runtime at batch 3); a dynamic batch is traced at 2."""
    import torch

    return torch.cat([example, example]) if dynamic_batch and example.shape[0] == 1 else example


@contextlib.contextmanager
def _quiet_loggers():
    """The dynamo exporter logs its passes (and a traceback for a failed opset conversion) at WARNING."""
    names = ("torch.onnx", "onnxscript", "torch._dynamo", "torch.export", "torch._export")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _opset_of(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _write_metadata(path: Path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (what this tool wrote: source model, method, target, MACs...)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _has_dynamic_batch(path: str | Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")


def validate_onnx(model, onnx_path: str | Path, example, dynamic_batch: bool, atol: float) -> OutputCheck:
    """Run the ONNX file in ONNX Runtime and `model` in PyTorch on the same random inputs; compare."""
    session = open_ort_session(onnx_path)
    batches = [example.shape[0]] + ([example.shape[0] + EXTRA_CHECK_BATCH] if dynamic_batch else [])
    checks = []
    for seed, batch in enumerate(batches):
        x = random_input((batch, *example.shape[1:]), seed=seed)
        expected = run_torch(model, x.to(example.device))
        try:
            actual = session.run(None, {INPUT_NAME: x.numpy()})
        except Exception as err:  # ORT raises its own Fail / InvalidArgument types
            raise OnnxRuntimeFailure(f"ONNX Runtime fails on {Path(onnx_path).name} at batch {batch}: "
                                     f"{_first_line(err)[:200]}") from err
        checks.append(check_outputs("onnx", expected, actual, atol))
    return max(checks, key=lambda check: check.max_abs_diff)


def open_ort_session(onnx_path: str | Path | bytes, providers: Sequence = ("CPUExecutionProvider",),
                     intra_op_threads: int | None = None):
    """An ONNX Runtime session (from a file, or the bytes of a model) with intra-op spinning off.

    Spinning off matters whenever two sessions are timed in turn (dense vs pruned): the idle session's
    spinning threads otherwise steal the cores from the busy one (measured on 2 cores: dense ResNet-18
    16.0 ms instead of 8.1 ms, pruned/dense ratio 0.80 instead of 0.63).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    try:
        model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
        return ort.InferenceSession(model, options, providers=list(providers))
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        where = "the model" if isinstance(onnx_path, bytes) else onnx_path
        raise CatalystDeployError(f"ONNX Runtime cannot load {where}: {_first_line(err)}") from err


def onnx_sample_shape(onnx_path: str | Path) -> tuple[int, ...]:
    """The first graph input's shape without the batch axis, e.g. (3, 224, 224).

    Raises UsageError when the file is not ONNX or a non-batch axis is dynamic (pass an input shape then).
    """
    import onnx

    from catalyst_deploy.errors import UsageError

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as err:
        raise UsageError(f"{onnx_path} is not a readable ONNX file: {_first_line(err)}") from err
    weights = {init.name for init in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in weights)
    dims = graph_input.type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") for d in dims):
        raise UsageError(f"{onnx_path}: input {graph_input.name!r} has dynamic non-batch axes; give the input shape")
    return tuple(d.dim_value for d in dims)


def run_torch(model, x) -> list:
    """`model(x)` without autograd, as a flat list of tensors."""
    import torch

    with torch.inference_mode():
        return as_output_list(model(x))


@contextlib.contextmanager
def eval_mode(model):
    """Put `model` in eval mode for the export and restore its train/eval state afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _output_names(model, example) -> list[str]:
    count = len(run_torch(model, example))
    return [OUTPUT_NAME] + [f"{OUTPUT_NAME}{i}" for i in range(1, count)]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
