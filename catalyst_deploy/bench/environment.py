"""What `catalyst-deploy env` reports: versions, devices, and which exporters and backends work here."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("catalyst-deploy", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxruntime-gpu",
            "onnxscript", "numpy")


def environment_report() -> dict:
    """Versions (None: not installed), CUDA devices, ONNX Runtime providers, and per exporter / backend
    whether it is usable here and, if not, why."""
    from catalyst_deploy.bench.backends import BACKENDS, unavailable_reason
    from catalyst_deploy.exporters import exporter_unavailable_reason
    from catalyst_deploy.formats import FORMATS

    versions = {name: _version(name) for name in PACKAGES}
    versions["tensorrt"] = _tensorrt_version()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
            "cuda": cuda_summary(), "onnxruntime_providers": _ort_providers(),
            "exporters": {name: _usable(exporter_unavailable_reason(name)) for name in FORMATS},
            "backends": {name: _usable(unavailable_reason(name)) for name in BACKENDS}}


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
