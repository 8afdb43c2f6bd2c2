"""Running TensorRT engines on torch CUDA tensors (no pycuda): the engine runner used by validation and
benchmarks, and the int8 entropy calibrator fed from a data loader."""

from __future__ import annotations

import itertools
from pathlib import Path
from collections.abc import Iterable

from catalyst_deploy.errors import CatalystDeployError, MissingDependency, UsageError

INSTALL_HINT = "pip install 'catalyst-deploy[tensorrt]'"


def require_tensorrt():
    """Import and return `tensorrt` (>= 10) when it and a CUDA GPU are present, else raise MissingDependency."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    gpu = _cuda_available()
    if trt is None:
        gpu_note = "" if gpu else " (and no CUDA GPU is visible to torch, which TensorRT also needs)"
        raise MissingDependency(f"TensorRT is not installed{gpu_note}: {INSTALL_HINT}")
    if not gpu:
        raise MissingDependency("TensorRT needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False)")
    if int(trt.__version__.split(".")[0]) != 10:  # 11 removed BuilderFlag.INT8, int8_calibrator, ...
        raise MissingDependency(f"TensorRT 10 is needed, found {trt.__version__}: pip install 'catalyst-deploy[tensorrt]' "
                                "(it pins tensorrt>=10,<11)")
    return trt


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class EngineRunner:
    """A serialized TensorRT engine run on torch CUDA tensors: `outputs = runner(x_cuda)`.

    For timing, `bind(x)` once (allocates outputs, sets addresses), then `execute()` per run.
    """

    def __init__(self, engine_path: str | Path, device: str = "cuda"):
        import torch

        trt = require_tensorrt()
        self._trt, self.device = trt, torch.device(device)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive the engine
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise CatalystDeployError(f"TensorRT cannot load {engine_path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        if len(self.input_names) != 1:
            raise UsageError(f"{engine_path} has {len(self.input_names)} inputs; only one-input models are supported")
        self._bound: tuple = ()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch axis (C, H, W)."""
        return tuple(self.engine.get_tensor_shape(self.input_names[0]))[1:]

    def bind(self, x) -> list:
        """Point the engine at `x` (a CUDA tensor) and at new output tensors, which it returns."""
        import torch

        name, trt = self.input_names[0], self._trt
        x = x.to(self.device, _torch_dtype(trt, self.engine.get_tensor_dtype(name))).contiguous()
        if not self.context.set_input_shape(name, tuple(x.shape)):
            raise UsageError(f"input shape {tuple(x.shape)} is outside the engine's optimization profile")
        self.context.set_tensor_address(name, x.data_ptr())
        outputs = []
        for out_name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(out_name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(out_name))
            outputs.append(torch.empty(shape, dtype=dtype, device=self.device))
            self.context.set_tensor_address(out_name, outputs[-1].data_ptr())
        self._bound = (x, outputs)  # the engine holds raw addresses: keep the tensors alive
        return outputs

    def execute(self, stream=None) -> None:
        """Enqueue one inference on `stream` (default: torch's current stream); does not synchronize."""
        import torch

        stream = stream or torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise CatalystDeployError("TensorRT execute_async_v3 failed")

    def __call__(self, x) -> list:
        outputs = self.bind(x)
        self.execute()
        return outputs


def make_entropy_calibrator(trt, loader: Iterable, max_batches: int):
    """An IInt8EntropyCalibrator2 fed from `loader` (tensors or (tensor, label) pairs) through one CUDA
    buffer; returns (calibrator, batch shape). Stops at `max_batches` or at the first short batch
    (TensorRT wants one fixed calibration batch size). Implicit int8 calibration is deprecated in
    TensorRT 10 in favour of explicit Q/DQ models but still supported."""
    import torch

    batches = (_images_of(item) for item in loader)
    first = next(batches, None)
    if first is None:
        raise UsageError("the int8 calibration data is empty")
    pending = itertools.islice(itertools.chain([first], batches), max_batches)
    shape = tuple(first.shape)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_batch = torch.empty(shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return shape[0]

        def get_batch(self, names):
            batch = next(pending, None)
            if batch is None or tuple(batch.shape) != shape:
                return None
            self.device_batch.copy_(batch)
            torch.cuda.synchronize()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return None  # always calibrate: the model changes with every pruning run

        def write_calibration_cache(self, cache):
            return None

    return EntropyCalibrator(), shape


def _torch_dtype(trt, dtype):
    import numpy as np
    import torch

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(dtype))).dtype


def _images_of(item):
    """The image tensor of a loader item: the item itself, or the first element of a (images, labels) pair."""
    return item[0] if isinstance(item, (tuple, list)) else item
