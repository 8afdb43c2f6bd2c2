"""What `catalyst-deploy env` reports: versions, devices, and which exporters and backends work here."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("catalyst-deploy", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxruntime-gpu",
            "onnxscript", "numpy", "timm", "tensorrt")
# CPU features that decide which ONNX Runtime / torch kernels run (NCHWc block 8 vs 16, int8 dot products)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "sve")


def environment_report() -> dict:
    """Versions (None: not installed), CUDA devices, ONNX Runtime providers, and per exporter / backend
    whether it is usable here and, if not, why."""
    from catalyst_deploy.bench.backends import unavailable_reason
    from catalyst_deploy.exporters import exporter_unavailable_reason
    from catalyst_deploy.formats import BACKENDS, FORMATS

    versions = {name: _version(name) for name in PACKAGES}
    versions["tensorrt"] = versions["tensorrt"] or _tensorrt_version()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
            "cpu": cpu_summary(), "cuda": cuda_summary(), "onnxruntime_providers": _ort_providers(),
            "exporters": {name: _usable(exporter_unavailable_reason(name)) for name in FORMATS},
            "backends": {name: _usable(unavailable_reason(name)) for name in BACKENDS}}


def cpu_summary() -> dict:
    """CPU model, the ISA flags ONNX Runtime's kernels depend on, and the thread counts the runtimes use."""
    import os

    import torch

    flags = cpu_flags()
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "isa": [flag for flag in ISA_FLAGS if flag in flags], "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "ort_channel_block": channel_multiple(needs_gpu=False)}


def channel_multiple(needs_gpu: bool) -> int:
    """The channel-count multiple that suits a backend's kernels, for `round_to`.

    CPU (ONNX Runtime): the NCHWc block of its convolutions, 16 where the CPU has AVX-512F and 8 otherwise
    (benchmarks/RESULTS.md, latency section). GPU: 8, the fp16 tensor-core alignment (not measured here).
    """
    if needs_gpu:
        return 8
    return 16 if "avx512f" in cpu_flags() else 8


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it is not readable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cuda_summary() -> dict:
    """torch's CUDA build and the devices it sees."""
    import torch

    devices = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        devices.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}"})
    return {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "devices": devices}


def _usable(reason: str | None) -> dict:
    return {"usable": reason is None, "reason": reason}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def _ort_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())
