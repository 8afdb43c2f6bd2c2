"""Terminal output for the CLI: rich progress bars for training phases and summary tables."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Callable, Iterator


@contextmanager
def phase_progress(enabled: bool = True) -> Iterator[Callable | None]:
    """Yields `progress(label, total) -> update(advance, **fields)` backed by one rich Progress, or None when
    not `enabled` (--json; the ranks other than 0 under torchrun: one set of bars, rank 0's)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, transient=False) as bar:

        def progress(label: str, total: int):
            task = bar.add_task(label, total=total, info="")

            def update(advance: int, **fields) -> None:
                info = "  ".join(_field(k, v) for k, v in fields.items())
                bar.update(task, advance=advance, info=info)

            return update

        yield progress


def _field(key: str, value) -> str:
    if key == "acc":
        return f"acc {value:.1f}%"
    if key == "flops":
        return f"FLOPs {value:.3f}"
    if key == "lam":
        return f"λ {value:.3g}"
    return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"


def print_prune_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    acc, macs, params = report["accuracy"], report["macs"], report["params"]
    table = Table(title=f"{report['config']['model']} -> {report['out']}")
    for col in ("", "dense", "pruned", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("MACs", f"{macs['dense']:,}", f"{macs['pruned']:,}", f"{macs['ratio']:.3f}")
    table.add_row("params", f"{params['dense']:,}", f"{params['pruned']:,}", f"{params['ratio']:.3f}")
    table.add_row("top-1 %", f"{acc['dense']:.2f}", f"{acc['final']:.2f}", "")
    Console().print(table)
    forced = f"  ->  after the decision {acc['after_decision']:.2f}%" if "after_decision" in acc else ""
    Console().print(f"after regularization {acc['after_regularization']:.2f}%{forced}  ->  right after surgery "
                    f"{acc['after_surgery']:.2f}%  ->  after recovery {acc['final']:.2f}%   "
                    f"({report['seconds']['total']:.0f} s)")
