"""The three figures of `compare.py`: accuracy vs FLOPs, the fair-chance bars, the bifurcation trajectories."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

PRUNED, KEPT = "#c0392b", "#2e86c1"
ZOOM_MIN, ZOOM_MAX = 1.02, 10.0  # the bottom row shows c in [1/zoom, zoom], zoom fitted to c before the freeze
C_SHOWN = 1e4  # c beyond [1/C_SHOWN, C_SHOWN] is drawn on the edge: F = 0 (c = inf) on top, d = 0 (c = 0) below


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def plot_accuracy_vs_flops(records: list[dict], dense_accuracy: float, path: Path) -> None:
    """Two panels (right after surgery, after recovery): mean ± std accuracy against the measured MACs
    ratio, one line per method across the targets; the dense accuracy dashed."""
    plt = _pyplot()
    ok = [r for r in records if not r.get("error")]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "acc_after_surgery", "right after surgery (before recovery)"),
                           (axes[1], "acc_final", "after recovery")):
        for method in methods:
            points = _method_points(ok, method, key)
            xs, ys, errs = zip(*points)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, lw=1.4 if method == "catalyst" else 1.0,
                        label=method, zorder=3 if method == "catalyst" else 2)
        ax.axhline(dense_accuracy, color="k", ls="--", lw=0.8, label=f"dense {dense_accuracy:.2f}")
        ax.set_xlabel("MACs ratio, pruned / dense (measured)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)  mean ± std over seeds")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _method_points(records: list[dict], method: str, key: str) -> list[tuple[float, float, float]]:
    """(mean MACs ratio, mean accuracy, std accuracy) per target of one method, by MACs ratio."""
    points = []
    for target in sorted({r["target_flops"] for r in records if r["method"] == method}):
        rows = [r for r in records if r["method"] == method and r["target_flops"] == target]
        acc_mean, acc_std = _mean_std([r[key] for r in rows])
        points.append((statistics.mean(r["macs_ratio"] for r in rows), acc_mean, acc_std))
    return points


def plot_fairness(fairness: list[dict], path: Path) -> None:
    """One panel per (setting, k): per method, the share pruned among rescaled vs untouched channels."""
    plt = _pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in fairness))
    factors = sorted({r["factor"] for r in fairness})
    methods = list(dict.fromkeys(r["method"] for r in fairness))
    fig, axes = plt.subplots(len(settings), len(factors), figsize=(max(6.0, 4.2 * len(factors)), 0.6 + 3.2 * len(settings)),
                             squeeze=False, sharey=True)
    for i, setting in enumerate(settings):
        for j, factor in enumerate(factors):
            ax = axes[i][j]
            rows = {r["method"]: r for r in fairness if r["setting"] == setting and r["factor"] == factor}
            xs = range(len(methods))
            ax.bar([x - 0.2 for x in xs], [100 * rows[m]["share_rescaled"] if m in rows else 0 for m in methods],
                   width=0.4, color="#e67e22", label=f"rescaled by {factor:g}")
            ax.bar([x + 0.2 for x in xs], [100 * rows[m]["share_untouched"] if m in rows else 0 for m in methods],
                   width=0.4, color="#7f8c8d", label="untouched")
            ax.set_xticks(list(xs), methods, fontsize=8)
            ax.set_title(f"k = {factor:g}, conv weights {setting}", fontsize=10)
            ax.legend(fontsize=7)
            ax.grid(axis="y", alpha=0.3)
        axes[i][0].set_ylabel("channels pruned (%)")
    fig.suptitle("Fair chance (P2): share pruned, rescaled vs untouched channels\n(equal bars: magnitude-fair)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bifurcation_trajectories(panels: list[dict], path: Path) -> None:
    """One column per Catalyst run: c = d/||F|| of every channel (log axis) against the step, pruned
    channels in red and kept ones in blue, the freeze step dotted; the top row shows the whole range (F = 0
    on the top edge, d = 0 on the bottom one), the bottom row zooms on c = 1, where the task loss moves
    channels before the freeze. Each panel: {title, trajectory ([[step, [log c per channel]], ...]),
    pruned (channel indices), frozen_at}."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(5.6 * len(panels), 7.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for column, panel in enumerate(panels):
        zoom = _zoom(panel)
        for row, limits in ((0, (0.5 / C_SHOWN, 2 * C_SHOWN)), (1, (1 / zoom, zoom))):
            _draw_trajectories(axes[row][column], panel, limits)
        axes[0][column].set_title(panel["title"], fontsize=9)
        axes[1][column].set_xlabel("step of the regularized phase (dotted: prune set frozen)")
        axes[1][column].set_ylabel(f"c, zoom on [1/{zoom:.3g}, {zoom:.3g}]", fontsize=9)
    axes[0][0].set_ylabel("c = d / ||F||  (top edge: F = 0, bottom: d = 0)", fontsize=9)
    axes[0][0].legend(fontsize=8, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _zoom(panel: dict) -> float:
    """Half-range (as a factor around c = 1) of the bottom row: the spread of c before the freeze, plus 20%."""
    frozen_at = panel.get("frozen_at")
    before = [abs(v) for step, logs in panel["trajectory"] if frozen_at is None or frozen_at < 0 or step < frozen_at
              for v in logs]
    return min(ZOOM_MAX, max(ZOOM_MIN, math.exp(1.2 * max(before, default=0.0))))


def _draw_trajectories(ax, panel: dict, limits: tuple[float, float]) -> None:
    from matplotlib.collections import LineCollection

    steps = [s for s, _ in panel["trajectory"]]
    pruned = set(panel["pruned"])
    per_channel = list(zip(*[c for _, c in panel["trajectory"]]))
    for colour, is_pruned in ((KEPT, False), (PRUNED, True)):
        lines = [list(zip(steps, map(_shown_c, logs))) for ch, logs in enumerate(per_channel)
                 if (ch in pruned) == is_pruned]
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=0.6, alpha=0.35))
        ax.plot([], [], color=colour, label=f"{'pruned' if is_pruned else 'kept'} ({len(lines)})")
    ax.set_yscale("log")
    ax.set_xlim(steps[0], max(steps[-1], steps[0] + 1))
    ax.set_ylim(*limits)
    if limits[1] < 100:  # the zoom: plain numbers instead of 1.02x10^0
        from matplotlib.ticker import FormatStrFormatter

        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    if panel.get("frozen_at") is not None and panel["frozen_at"] >= 0:
        ax.axvline(panel["frozen_at"], color="k", lw=0.8, ls=":")


def _shown_c(log_c: float) -> float:
    return math.exp(max(-math.log(C_SHOWN), min(math.log(C_SHOWN), log_c)))
