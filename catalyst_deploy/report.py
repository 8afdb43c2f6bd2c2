"""Run reports: report.json (everything, for machines), report.md (the summary a person reads), and the
bifurcation histogram of log c at the cut."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_report(report: dict, out) -> None:
    """report.json and report.md through `out` (a rundir.RunFolder)."""
    out.write_text("report.json", json.dumps(report, indent=1, default=str))
    out.write_text("report.md", report_markdown(report))


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def report_markdown(r: dict) -> str:
    cfg, acc, sec = r["config"], r["accuracy"], r["seconds"]
    lines = [
        f"# catalyst-deploy prune: {cfg['model']} on {cfg['data']}",
        "",
        f"Method `{cfg['method']}`, target FLOPs {cfg['target_flops']}, round-to {cfg['round_to']}, "
        f"device {r.get('device')}, input {r.get('input_shape')}.",
        "",
        "| | dense | pruned | ratio |",
        "|---|---|---|---|",
        f"| MACs | {_fmt_count(r['macs']['dense'])} | {_fmt_count(r['macs']['pruned'])} | {r['macs']['ratio']:.3f} |",
        f"| params | {_fmt_count(r['params']['dense'])} | {_fmt_count(r['params']['pruned'])} | {r['params']['ratio']:.3f} |",
        "",
        "| accuracy (%) | dense | after regularization | right after surgery | after recovery |",
        "|---|---|---|---|---|",
        "| top-1 | {dense} | {after_regularization} | {after_surgery} | {final} |".format(**{k: f"{v:.2f}" for k, v in acc.items()}),
        "",
        f"Channels removed: {r['channels_removed']} of {r['channels_total']}.",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sec.items()],
    ]
    cat = r.get("catalyst")
    if cat:
        lines += ["", "## Catalyst", "",
                  f"Prune set frozen at step {cat['frozen_at_step']}"
                  f"{' (forced by the deadline)' if cat['freeze_forced'] else ''}; "
                  f"{cat['frozen']} channels frozen, exactly zero at the cut: {cat['frozen_at_zero']}; "
                  f"{cat['channels_d_zero']} kept channels have d = 0.",
                  f"Bifurcation margin (min log c pruned - max log c kept): {r.get('bifurcation_margin', 'n/a')}.",
                  "", "lambda history (step: lambda): " + ", ".join(
                      f"{s}: {lam:.3g}" for s, lam in _thin(cat["lambda_history"], 12))]
    if r.get("latency_markdown"):
        lines += ["", "## Latency", "", r["latency_markdown"]]
    return "\n".join(lines) + "\n"


def _thin(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    stride = math.ceil(len(items) / n)
    return items[::stride] + [items[-1]]


def bifurcation_margin(log_c: list[float], pruned: list[bool]) -> float | None:
    """min log c over pruned channels - max log c over kept ones (> 0: a clean split)."""
    p = [v for v, m in zip(log_c, pruned) if m]
    k = [v for v, m in zip(log_c, pruned) if not m]
    if not p or not k:
        return None
    return min(p) - max(k)


def write_bifurcation_png(log_c_freeze: list[float], log_c_cut: list[float], pruned: list[int], path: Path) -> None:
    """Histograms of log10 c: when the prune set was frozen (the split the task loss made) and at the cut
    (pruned channels at F = 0, kept ones at d = 0), pruned and kept channels in two colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cut = set(pruned)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, values, title in ((axes[0], log_c_freeze, "when the prune set was frozen"),
                              (axes[1], log_c_cut, "at the cut")):
        vals = [v / math.log(10) for v in values]
        lo, hi = min(vals), max(vals)
        bins = [lo + (hi - lo + 1e-9) * i / 60 for i in range(61)]
        ax.hist([v for i, v in enumerate(vals) if i in cut], bins=bins, color="#c0392b", alpha=0.8, label="pruned")
        ax.hist([v for i, v in enumerate(vals) if i not in cut], bins=bins, color="#2e86c1", alpha=0.8, label="kept")
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"log10 c {title}", fontsize=10)
        ax.set_xlabel("log10(d / ||F||)  (c = 1 dashed; ±21.7: clipped F = 0 / d = 0)", fontsize=8)
    axes[0].set_ylabel("channels")
    axes[0].legend(fontsize=8)
    fig.suptitle("Catalyst bifurcation", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
