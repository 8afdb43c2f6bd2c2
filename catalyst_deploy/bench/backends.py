"""Benchmark backends: how each row of the backend table (`formats.BACKENDS`) loads and runs a model.

A backend turns a ModelArtifact into a loaded model whose `prepare(batch)` returns a zero-argument
callable: one complete, synchronous inference on a fixed random batch. The harness times those calls.

What is timed, per backend:
- CPU (ort-cpu, torch on CPU): the inference call on an input already in memory.
- GPU (ort-cuda, ort-trt, trt, torch(-cudagraph) on CUDA): host -> device copy of the input (from pinned
  memory for trt/torch; ONNX Runtime copies from its own buffer), the inference, and a device
  synchronize; the output stays on the device.
"""

from __future__ import annotations

import copy
from pathlib import Path
from collections.abc import Callable, Sequence

from catalyst_deploy.bench.artifacts import ModelArtifact, engine_for, module_for, onnx_for
from catalyst_deploy.errors import CatalystDeployError
from catalyst_deploy.formats import get_backend


def unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run on this machine, or None when it can."""
    spec = get_backend(name)
    if spec.ort_provider:
        import onnxruntime as ort

        if spec.ort_provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no {spec.ort_provider} here "
                    f"(available: {', '.join(ort.get_available_providers())}; install onnxruntime-gpu on a CUDA machine)")
    if spec.name == "trt":
        from catalyst_deploy.errors import MissingDependency
        from catalyst_deploy.exporters.tensorrt import require_tensorrt

        try:
            require_tensorrt()
        except MissingDependency as err:
            return str(err)
    if spec.needs_gpu and not _cuda_available():
        return "needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False)"
    return None


def load_for_backend(name: str, artifact: ModelArtifact, sample_shape: Sequence[int], threads: int | None,
                     precision: str, workdir: Path):
    """The artifact loaded for backend `name`: an object with `prepare(batch) -> run()`."""
    spec = get_backend(name)
    if spec.runs == "onnx":
        providers = _ort_providers(spec, precision, workdir)
        device = "cuda" if spec.needs_gpu else "cpu"
        return OrtModel(onnx_for(artifact, sample_shape, workdir), providers, threads, device, sample_shape)
    if spec.runs == "trt":
        return TensorRTModel(artifact, sample_shape, precision, workdir)
    return TorchModel(module_for(artifact), sample_shape, threads, cuda_graph=spec.name == "torch-cudagraph")


class OrtModel:
    """An ONNX Runtime session (intra-op spinning off, see exporters.onnx.open_ort_session)."""

    def __init__(self, onnx_path: Path, providers: list, threads: int | None, device: str, sample_shape):
        from catalyst_deploy.exporters.onnx import open_ort_session

        self.session = open_ort_session(onnx_path, providers, threads)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if self.session.get_providers()[0] != wanted:  # ORT falls back to CPU silently when a provider fails
            raise CatalystDeployError(f"{wanted} did not initialize (session runs on {self.session.get_providers()})")
        self.device, self.sample_shape = device, tuple(sample_shape)
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, batch: int) -> Callable[[], None]:
        import numpy as np

        x = np.random.default_rng(0).standard_normal((batch, *self.sample_shape), dtype=np.float32)
        if self.device == "cpu":
            feeds = {self.input_name: x}
            return lambda: self.session.run(None, feeds)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda")

        def run() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run


class TensorRTModel:
    """A native TensorRT engine per batch (the given engine, or one built from ONNX for that batch)."""

    def __init__(self, artifact: ModelArtifact, sample_shape, precision: str, workdir: Path):
        self.artifact, self.sample_shape, self.precision, self.workdir = artifact, tuple(sample_shape), precision, workdir

    def prepare(self, batch: int) -> Callable[[], None]:
        import torch

        from catalyst_deploy.exporters.tensorrt_runtime import EngineRunner

        runner = EngineRunner(engine_for(self.artifact, self.sample_shape, batch, self.precision, self.workdir))
        host = torch.randn(batch, *self.sample_shape).pin_memory()
        device_input = torch.empty_like(host, device="cuda")
        runner.bind(device_input)

        def run() -> None:
            device_input.copy_(host, non_blocking=True)
            runner.execute()
            torch.cuda.synchronize()

        return run


class TorchModel:
    """PyTorch eager on CUDA (pinned input, synchronize per call) or CPU; optionally one CUDA graph."""

    def __init__(self, module, sample_shape, threads: int | None, cuda_graph: bool = False):
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        on_device = next(module.parameters()).device == self.device
        self.module = (module if on_device else copy.deepcopy(module).to(self.device)).eval()  # caller's stays put
        self.sample_shape, self.cuda_graph = tuple(sample_shape), cuda_graph

    def prepare(self, batch: int) -> Callable[[], None]:
        import torch

        if self.device.type == "cpu":
            x = torch.randn(batch, *self.sample_shape)
            return lambda: _forward(self.module, x)
        host = torch.randn(batch, *self.sample_shape).pin_memory()
        device_input = torch.empty_like(host, device=self.device)
        step = capture_cuda_graph(self.module, device_input) if self.cuda_graph else (
            lambda: _forward(self.module, device_input))

        def run() -> None:
            device_input.copy_(host, non_blocking=True)
            step()
            torch.cuda.synchronize()

        return run


def capture_cuda_graph(module, static_input) -> Callable[[], None]:
    """Record `module(static_input)` as a CUDA graph (after warm-up on a side stream); returns its replay.

    Refill `static_input` in place before each replay; the output lands in the graph's own buffer."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            module(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_output = module(static_input)

    def replay() -> None:
        graph.replay()  # writes static_output, which this closure keeps alive

    replay.static_output = static_output
    return replay


def _forward(module, x) -> None:
    import torch

    with torch.inference_mode():
        module(x)


def _ort_providers(spec: BackendSpec, precision: str, workdir: Path) -> list:
    if spec.name == "ort-trt":
        options = {"trt_fp16_enable": precision in ("fp16", "int8"), "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(workdir / "ort-trt-cache")}
        return [(spec.ort_provider, options), "CUDAExecutionProvider"]
    return [spec.ort_provider]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
