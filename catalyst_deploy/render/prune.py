"""The prune report for people: the terminal summary and report.md."""

from __future__ import annotations

import math

from catalyst_deploy.report import PruneReport

PHASES = (("after_regularization", "after regularization"), ("after_decision", "after the decision"),
          ("after_surgery", "right after the cut"),
          ("final", "after recovery"))


def phases_of(acc: dict) -> tuple:
    """The PHASES this run measured (after_decision only where the method forced part of its set)."""
    return tuple((k, label) for k, label in PHASES if k in acc)


def count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def latency_cells(report: PruneReport, backend: str = "ort-cpu") -> dict[int, dict]:
    """{batch: {dense_ms, pruned_ms, ratio}} of the benchmarked exported files on `backend`."""
    cells = {}
    for row in (report.latency or {}).get("cells", []):
        if row["backend"] == backend:
            cells[row["batch"]] = row
    return cells


def summary_table(report: PruneReport):
    """One rich table: MACs, params, accuracy and (with --bench) latency per batch, dense against pruned."""
    from rich.table import Table

    table = Table(title=f"{report.config['model']} -> {report.out}")
    for col in ("", "dense", "pruned", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("MACs", count(report.macs.dense), count(report.macs.pruned), f"{report.macs.ratio:.3f}")
    table.add_row("params", count(report.params.dense), count(report.params.pruned), f"{report.params.ratio:.3f}")
    acc = report.accuracy
    table.add_row("top-1 % (test)", f"{acc['dense']:.2f}", f"{acc['final']:.2f}", "")
    for batch, cell in sorted(latency_cells(report).items()):
        table.add_row(f"ORT CPU ms, batch {batch}", f"{cell['dense_ms']:.3g}", f"{cell['pruned_ms']:.3g}",
                      f"{cell['ratio']:.3f}")
    return table


def print_summary(report: PruneReport) -> None:
    from rich.console import Console

    console = Console()
    console.print(summary_table(report))
    acc = report.accuracy
    console.print("  ->  ".join(f"{label} {acc[key]:.2f}%" for key, label in phases_of(acc))
                  + f"   ({report.seconds.get('total', 0):.0f} s)")
    for fmt, entry in report.exports.items():
        if "error" in entry:
            console.print(f"[yellow]{fmt} export failed:[/yellow] {entry['error']}", markup=True)


def markdown(r: PruneReport) -> str:
    """report.md."""
    cfg, acc = r.config, r.accuracy
    measured = phases_of(acc)
    lines = [f"# catalyst-deploy prune: {cfg['model']} on {cfg['data']}", "",
             f"Method `{cfg['method']}`, target FLOPs {cfg['target_flops']} (MACs), round-to {cfg['round_to']}, "
             f"device {r.device}, input {r.input_shape}.", "",
             "| | dense | pruned | ratio |", "|---|---|---|---|",
             f"| MACs | {count(r.macs.dense)} | {count(r.macs.pruned)} | {r.macs.ratio:.3f} |",
             f"| params | {count(r.params.dense)} | {count(r.params.pruned)} | {r.params.ratio:.3f} |", "",
             "| accuracy (%) | dense | " + " | ".join(label for _, label in measured) + " |",
             "|---" * (len(measured) + 2) + "|",
             "| test | " + " | ".join(f"{acc[k]:.2f}" for k in ("dense", *dict(measured))) + " |"]
    if r.val_accuracy:
        lines.append("| validation | " + " | ".join(f"{r.val_accuracy[k]:.2f}" for k in ("dense", *dict(measured))) + " |")
    lines += ["", f"Channels removed: {r.channels['removed']} of {r.channels['total']}. Optimizer steps: "
              + ", ".join(f"{k} {v}" for k, v in r.steps.items()) + ".", "",
              "| phase | seconds |", "|---|---|", *[f"| {k} | {v} |" for k, v in r.seconds.items()]]
    lines += _catalyst_lines(r.method) + _export_lines(r)
    return "\n".join(lines) + "\n"


def _catalyst_lines(cat: dict | None) -> list[str]:
    if not cat or not cat.get("split"):
        return []
    sp = cat["split"]
    margin = "n/a" if sp["margin"] is None else ("inf" if math.isinf(sp["margin"]) else f"{sp['margin']:.3g}")
    history = ", ".join(f"{s}: {lam:.3g}" for s, lam in _thin(cat.get("lambda_history", []), 12))
    return ["", "## Catalyst", "",
            f"Prune set frozen at step {sp['step']}{' (forced by the deadline)' if sp['forced'] else ''}: "
            f"{sp['collapsed']} channels collapsed (F = 0; the gated form: s = 0), {sp['kept']} at d = 0, "
            f"{sp['undecided']} undecided; "
            f"{100 * sp['decided_share']:.1f}% of channels had c <= 0.1 or c >= 10. The margin fill added "
            f"{sp['filled']} channels and gave back {sp['given_back']}.",
            f"Margin at the freeze (min log c pruned - max log c of the live channels kept): {margin}.", "",
            f"lambda (step: value): {history}"]


def _export_lines(r: PruneReport) -> list[str]:
    lines = []
    if r.exports:
        lines += ["", "## Exports", "", "| format | file | max abs diff vs PyTorch | tolerance |", "|---|---|---|---|"]
        for fmt, e in r.exports.items():
            lines.append(f"| {fmt} | {e.get('path', '-')} | {e['max_abs_diff']:.3g} | {e['atol']:.3g} |" if "error" not in e
                         else f"| {fmt} | failed: {e['error']} | | |")
    if r.latency and r.latency.get("markdown"):
        lines += ["", "## Latency of the exported files", "", r.latency["markdown"]]
    return lines


def _thin(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    stride = math.ceil(len(items) / n)
    return items[::stride] + [items[-1]]
