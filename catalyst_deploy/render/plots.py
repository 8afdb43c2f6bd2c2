"""Plots, drawn with matplotlib's object API (`Figure`), so that nothing switches a global backend."""

from __future__ import annotations

import math
from pathlib import Path


def _figure(width: float, height: float, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, axes


def bifurcation_png(log_c: list[float], pruned: list[int], path: Path) -> None:
    """Histogram of log10 c = log10(d/|s|) when the prune set was frozen, before anything was forced:
    the split the dynamics made. Channels already at s = 0 (c = inf) and at d = 0 (c = 0) sit at the
    clipped ends; pruned and kept channels in two colours."""
    chosen = set(pruned)
    vals = [max(-3.0, min(3.0, v / math.log(10))) for v in log_c]
    fig, axes = _figure(6, 3.4)
    ax = axes[0]
    bins = [-3.0 + 6.0 * i / 60 for i in range(61)]
    ax.hist([v for i, v in enumerate(vals) if i in chosen], bins=bins, color="#c0392b", alpha=0.8, label="pruned")
    ax.hist([v for i, v in enumerate(vals) if i not in chosen], bins=bins, color="#2e86c1", alpha=0.8, label="kept")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("log10 c at the freeze  (c = 1 dashed; +-3: s = 0 / d = 0 or beyond)", fontsize=8)
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    ax.set_title("Catalyst: the split at the freeze", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")


def latency_png(report, path: str | Path) -> Path:
    """Per backend, p50 latency per image of dense and pruned per batch size, with the ideal (dense x FLOPs
    ratio) drawn over each pruned bar when the FLOPs ratio is known. `report`: a bench.report.BenchReport."""
    backends = list(dict.fromkeys(r.backend for r in report.rows if r.ok)) or ["nothing measured"]
    fig, axes = _figure(4.5 * len(backends), 3.8, cols=len(backends))
    for ax, backend in zip(axes, backends):
        _latency_panel(ax, report, backend)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return Path(path)


def _latency_panel(ax, report, backend: str) -> None:
    from catalyst_deploy.render.bench import ROLE_LABELS

    batches = list(dict.fromkeys(r.batch for r in report.rows if r.backend == backend))
    width = 0.38
    for offset, role, color in ((-width / 2, "baseline", "#8c8c8c"), (width / 2, "pruned", "#1f77b4")):
        for i, batch in enumerate(batches):
            row = report.cell(backend, batch, role)
            if row and row.ok:
                ax.bar(i + offset, row.stats.p50_ms / batch, width, color=color, label=ROLE_LABELS[role] if i == 0 else None)
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
