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
from dataclasses import dataclass
from pathlib import Path

from catalyst_deploy.bench.stats import LatencyStats

SCHEMA = "catalyst-deploy/bench/1"
STAT_KEYS = ("runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "throughput_ips")
ROLE_LABELS = {"baseline": "dense", "pruned": "pruned"}


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


# ---- renderings ----------------------------------------------------------------------------------
TABLE_HEADER = ("backend", "batch", "model", "p50 ms", "p90 ms", "p99 ms", "mean±std ms", "images/s", "runs",
                "vs dense", "note")


def table_rows(report: BenchReport) -> list[tuple[str, ...]]:
    """The report as text cells (TABLE_HEADER order), shared by the terminal table and bench.md."""
    cells = []
    for row in report.rows:
        s = row.stats
        ratio = report.latency_ratio(row.backend, row.batch) if row.model == "pruned" else None
        numbers = (f"{s.p50_ms:.4g}", f"{s.p90_ms:.4g}", f"{s.p99_ms:.4g}", f"{s.mean_ms:.4g}±{s.std_ms:.3g}",
                   f"{s.throughput_ips:.4g}", str(s.runs)) if s else ("-",) * 6
        cells.append((row.backend, str(row.batch), ROLE_LABELS[row.model], *numbers,
                      f"{ratio:.3f}" if ratio is not None else "", row.error or ""))
    return cells


def summary_line(report: BenchReport) -> str:
    s = report.settings
    flops = f"{report.flops_ratio:.3f}" if report.flops_ratio is not None else "n/a"
    return (f"input {'x'.join(map(str, report.input_shape))}; p50 over >= {s['min_runs']} runs and >= "
            f"{s['min_time_s']} s per model, dense and pruned interleaved; threads {s['threads'] or 'default'}; "
            f"FLOPs ratio (ideal latency ratio) {flops}")


# The terminal shows fewer, shorter columns than bench.md so that it fits 80 characters.
TERMINAL_COLUMNS = {"backend": "backend", "batch": "batch", "model": "model", "p50 ms": "p50", "p99 ms": "p99",
                    "images/s": "img/s", "runs": "runs", "vs dense": "ratio", "note": "note"}


def render_table(report: BenchReport):
    """The report for the terminal: a rich Table, with failure reasons as numbered notes below it."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Latency in ms: dense vs pruned (ratio = p50 pruned / p50 dense)", caption=summary_line(report),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    keep = [TABLE_HEADER.index(name) for name in TERMINAL_COLUMNS]
    for name in TERMINAL_COLUMNS.values():
        table.add_column(name, justify="left" if name in ("backend", "model", "note") else "right", no_wrap=True)
    reasons: list[str] = []
    for cells in table_rows(report):
        if cells[-1]:
            reasons += [cells[-1]] if cells[-1] not in reasons else []
            cells = (*cells[:-1], f"see {reasons.index(cells[-1]) + 1}")
        table.add_row(*(cells[i] for i in keep))
    notes = [Text(f"{i}. {reason}") for i, reason in enumerate(reasons, 1)]  # Text: "[tensorrt]" is not markup
    return Group(table, *notes)


def to_markdown(report: BenchReport) -> str:
    """bench.md: models, settings and the table."""
    lines = ["# Latency: dense vs pruned", ""]
    lines += [f"- {ROLE_LABELS[role]}: `{source}`" for role, source in report.models.items()]
    lines += [f"- {summary_line(report)}", f"- machine: {report.machine['platform']}, "
              f"{report.machine['cpu_count']} CPUs, GPU {report.machine['gpu'] or 'none'}", ""]
    lines.append("| " + " | ".join(TABLE_HEADER) + " |")
    lines.append("|" + "|".join("---" for _ in TABLE_HEADER) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in table_rows(report)]
    return "\n".join(lines) + "\n"


def plot_latency(report: BenchReport, path: str | Path) -> Path:
    """latency.png: per backend, p50 latency per image of dense and pruned per batch size, with the
    ideal (dense x FLOPs ratio) drawn over each pruned bar when the FLOPs ratio is known. Backends with
    nothing measured are left out (their reasons are in the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r.backend for r in report.rows if r.ok)) or ["nothing measured"]
    fig, axes = plt.subplots(1, len(backends), figsize=(4.5 * len(backends), 3.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        _plot_backend(ax, report, backend)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _plot_backend(ax, report: BenchReport, backend: str) -> None:
    batches = list(dict.fromkeys(r.batch for r in report.rows if r.backend == backend))
    width = 0.38
    for offset, role, color in ((-width / 2, "baseline", "#8c8c8c"), (width / 2, "pruned", "#1f77b4")):
        for i, batch in enumerate(batches):
            row = report.cell(backend, batch, role)
            if row and row.ok:
                ax.bar(i + offset, row.stats.p50_ms / batch, width, color=color,
                       label=ROLE_LABELS[role] if i == 0 else None)
    for i, batch in enumerate(batches):
        dense = report.cell(backend, batch, "baseline")
        if report.flops_ratio is not None and dense and dense.ok:
            ideal = dense.stats.p50_ms / batch * report.flops_ratio
            ax.hlines(ideal, i, i + width, colors="black", linestyles="--",
                      label=f"ideal (FLOPs ratio {report.flops_ratio:.2f})" if i == 0 else None)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per image (ms)")
    ax.set_title(backend)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """Write bench.json, bench.md and latency.png into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "plot": out_dir / "latency.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(report))
    plot_latency(report, paths["plot"])
    return paths
