"""The benchmark report as a terminal table (rich) and as bench.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from catalyst_deploy.bench.report import BenchReport

ROLE_LABELS = {"baseline": "dense", "pruned": "pruned"}

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
