"""Benchmark results: rows, the bench.json schema, and the table / markdown / plot renderings.

bench.json (schema "catalyst-deploy/bench/1"; keys are stable, values null when not applicable):

    schema        "catalyst-deploy/bench/1"
    created_utc   ISO-8601 time of the report
    machine       {platform, python, cpu_count, gpu, versions: {torch, onnxruntime, tensorrt}}
    settings      {backends, batches, threads, warmup, min_time_s, min_runs, precision, statistic}
    models        {baseline: source | null, pruned: source}
    input_shape   per-image shape, e.g. [3, 224, 224]
    flops_ratio   pruned/dense MACs (the ideal latency ratio) | null
    rows          one per (backend, batch, model): {backend, batch, model ("baseline"|"pruned"), ok, error,
                  runs, p50_ms, p90_ms, p99_ms, mean_ms, std_ms, min_ms, throughput_ips}
    ratios        one per (backend, batch) with both models measured:
                  {backend, batch, latency_ratio (p50 pruned / p50 baseline), speedup (1 / latency_ratio)}
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from catalyst_deploy.bench.stats import LatencyStats

SCHEMA = "catalyst-deploy/bench/1"
STAT_KEYS = ("runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "throughput_ips")


@dataclass(frozen=True)
class BenchRow:
    """One (backend, batch, model) cell: statistics, or the reason it could not be measured."""

    backend: str
    batch: int
    model: str
    stats: LatencyStats | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.stats is not None

    def to_dict(self) -> dict:
        stats = self.stats.to_dict() if self.stats else dict.fromkeys(STAT_KEYS)
        return {"backend": self.backend, "batch": self.batch, "model": self.model, "ok": self.ok,
                "error": self.error, **stats}


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured, plus what is needed to read it."""

    settings: dict
    models: dict
    input_shape: tuple
    flops_ratio: float | None
    rows: tuple
    machine: dict

    @property
    def ok(self) -> bool:
        """True when at least one cell was measured."""
        return any(row.ok for row in self.rows)

    @property
    def pruned_ok(self) -> bool:
        """True when the model under test was measured somewhere (a baseline alone is not a result)."""
        return any(row.ok for row in self.rows if row.model == "pruned")

    def cell(self, backend: str, batch: int, model: str) -> BenchRow | None:
        return next((r for r in self.rows if (r.backend, r.batch, r.model) == (backend, batch, model)), None)

    def latency_ratio(self, backend: str, batch: int) -> float | None:
        """p50 pruned / p50 baseline for one backend and batch, when both were measured."""
        dense, pruned = self.cell(backend, batch, "baseline"), self.cell(backend, batch, "pruned")
        if dense and pruned and dense.ok and pruned.ok:
            return pruned.stats.p50_ms / dense.stats.p50_ms
        return None

    def ratios(self) -> list[dict]:
        pairs = dict.fromkeys((r.backend, r.batch) for r in self.rows)
        out = []
        for backend, batch in pairs:
            ratio = self.latency_ratio(backend, batch)
            if ratio is not None:
                out.append({"backend": backend, "batch": batch, "latency_ratio": ratio, "speedup": 1 / ratio})
        return out

    def to_dict(self) -> dict:
        import datetime

        return {"schema": SCHEMA,
                "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": self.machine, "settings": self.settings,
                "models": {"baseline": self.models.get("baseline"), "pruned": self.models.get("pruned")},
                "input_shape": list(self.input_shape), "flops_ratio": self.flops_ratio,
                "rows": [row.to_dict() for row in self.rows], "ratios": self.ratios()}


def machine_summary() -> dict:
    """Platform, CPU count, GPU name (when torch sees one) and runtime versions, for the report header."""
    import os
    import platform
    import sys
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    gpu = None
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        gpu = sys.modules["torch"].cuda.get_device_name(0)
    ort = version("onnxruntime") or version("onnxruntime-gpu")
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "gpu": gpu, "versions": {"torch": version("torch"), "onnxruntime": ort, "tensorrt": version("tensorrt")}}


def write_bench_files(report: BenchReport, out_dir: str | Path, folder=None) -> dict[str, Path]:
    """Write bench.json, bench.md and latency.png into `out_dir` atomically (recorded in `folder`, a
    rundir.RunFolder, when given); returns their paths."""
    from catalyst_deploy.atomic import atomic_path
    from catalyst_deploy.render.bench import to_markdown
    from catalyst_deploy.render.plots import latency_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {"bench.json": lambda tmp: tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n"),
               "bench.md": lambda tmp: tmp.write_text(to_markdown(report)),
               "latency.png": lambda tmp: latency_png(report, tmp)}
    paths = {}
    for name, write in writers.items():
        with folder.writing([name]) if folder is not None else nullcontext(), atomic_path(out_dir / name) as tmp:
            write(tmp)  # named in the marker before the file appears (RunFolder.writing)
        paths[name] = out_dir / name
    return paths
