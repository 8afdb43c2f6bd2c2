"""Run reports: report.json (everything, for machines), report.md (the summary a person reads), and the
bifurcation histogram of log c at the cut."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_report(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(report_markdown(report))


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


def write_bifurcation_png(log_c: list[float], path: Path) -> None:
    """Histogram of log10 c at the cut: pruned channels pile up at F = 0 (right), kept at d = 0 (left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [v / math.log(10) for v in log_c]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(vals, bins=80, color="#3b6ea8")
    ax.axvline(0.0, color="k", lw=0.8, ls="--", label="c = 1 (decision boundary)")
    ax.set_xlabel("log10 c = log10(d / ||F||)   (clipped: F = 0 at right, d = 0 at left)")
    ax.set_ylabel("channels")
    ax.set_title("Catalyst bifurcation at the cut")
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
