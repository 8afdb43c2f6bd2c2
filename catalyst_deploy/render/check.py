"""`catalyst-deploy check` as terminal tables: the model, its channel groups, what is left alone and why,
and the trial cut."""

from __future__ import annotations

SHOWN_GROUPS = 24  # the rest are summed up in one line; --json has them all


def print_check(report: dict) -> None:
    """Print the check report on the terminal."""
    from rich.console import Console

    Console().print(render_check(report))


def render_check(report: dict):
    """The check report (`CheckReport.to_dict()`) as rich renderables."""
    from rich.console import Group
    from rich.table import Table

    parts = [_summary(report)]
    if report["groups"]:
        groups = Table(title=f"Channel groups ({len(report['groups'])})")
        for column in ("group (root layer)", "kind", "size", "ch/unit", "layers", "MACs/unit"):
            groups.add_column(column, justify="left" if column.startswith(("group", "kind")) else "right",
                              overflow="fold")
        ranked = sorted(report["groups"], key=lambda row: -row["macs_per_unit"])
        for row in ranked[:SHOWN_GROUPS]:
            groups.add_row(row["group"], row["kind"], str(row["size"]), str(row["unit_width"]), str(row["layers"]),
                           _count(row["macs_per_unit"]))
        if len(ranked) > SHOWN_GROUPS:
            groups.add_row(f"... {len(ranked) - SHOWN_GROUPS} more (--json lists all)", "", "", "", "", "")
        parts.append(groups)
    if report["left_alone"]:
        alone = Table(title="Left alone")
        alone.add_column("layer")
        alone.add_column("why", overflow="fold")
        for name, reason in report["left_alone"].items():
            alone.add_row(name, reason)
        parts.append(alone)
    return Group(*parts)


def _summary(report: dict):
    from rich.table import Table

    table = Table(title=f"check {report['model']}", show_header=False)
    table.add_row("input", "x".join(map(str, report["input_shape"])))
    if report["macs_dense"] is not None:
        table.add_row("dense", f"{_count(report['macs_dense'])} MACs, {_count(report['params_dense'])} params")
    if report["converted"]:
        table.add_row("attention", f"{len(report['converted'])} torchvision attention modules made head-prunable "
                                   "(same outputs)")
    if report["min_macs_ratio"] is not None:
        table.add_row("least reachable", f"{report['min_macs_ratio']:.3f} of the dense MACs")
    cut = report["cut"]
    if cut:
        table.add_row(f"trial cut at {report['target']}", f"{cut['macs_ratio']:.3f} of the MACs, {cut['params_ratio']:.3f} "
                      f"of the params; {cut['channels_removed']} channels and {cut['heads_removed']} heads removed")
        for role, parity in cut.get("parity", {}).items():
            values = ", ".join(f"batch {batch}: {diff:.2g}" for batch, diff in parity.items())
            table.add_row(f"ONNX parity ({role})", f"max |ORT - PyTorch| / max |PyTorch|: {values}")
    latency = report["latency"]
    if latency:
        table.add_row("ORT CPU latency", f"batch {latency['batch']}: {latency['dense_ms']:.3g} ms dense, "
                      f"{latency['pruned_ms']:.3g} ms cut: ratio {latency['ratio']:.3f}")
    for note in report["notes"]:
        table.add_row("note", note)
    table.add_row("status", report["status"] + (f": {report['reason']}" if report["reason"] else ""))
    table.add_row("seconds", ", ".join(f"{step} {value:g}" for step, value in report["seconds"].items()))
    return table


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"
