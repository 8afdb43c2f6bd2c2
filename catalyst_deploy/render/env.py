"""The environment report (`catalyst-deploy env`) as rich tables."""

from __future__ import annotations


def render_environment(report: dict):
    """The environment report as rich tables (versions and devices; exporters and backends)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    versions = Table(title="Environment", show_header=False)
    versions.add_row("python", report["python"])
    versions.add_row("platform", report["platform"])
    for name, version in report["versions"].items():
        versions.add_row(name, version or "not installed")
    cpu = report["cpu"]
    versions.add_row("CPU", f"{cpu['model']} ({cpu['machine']}, {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs usable)")
    versions.add_row("ISA flags", ", ".join(cpu["isa"]) or "none of the listed")
    versions.add_row("threads", f"torch {cpu['torch_threads']} (inter-op {cpu['torch_interop_threads']}); ONNX Runtime "
                                f"channel block {cpu['ort_channel_block']} (--round-to for CPU latency)")
    cuda = report["cuda"]
    gpus = ", ".join(f"{d['index']}: {d['name']} ({d['memory_gib']} GiB, sm {d['capability']})" for d in cuda["devices"])
    versions.add_row("CUDA (torch)", f"{cuda['torch_cuda'] or 'CPU-only build'}; devices: {gpus or 'none'}")
    versions.add_row("ORT providers", ", ".join(report["onnxruntime_providers"]))
    usable = Table(title="Usable here")
    for column in ("kind", "name", "usable", "why not"):
        usable.add_column(column, overflow="fold")
    for kind in ("exporters", "backends"):
        for name, entry in report[kind].items():
            usable.add_row(kind[:-1], name, "yes" if entry["usable"] else "no", Text(entry["reason"] or ""))
    return Group(versions, usable)
