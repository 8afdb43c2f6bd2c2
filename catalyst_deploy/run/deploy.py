"""After the cut: export the pruned model (and, for `--bench`, the dense one the same way) and time the
files that ship, dense against pruned, on the backends the format table lists for each format.

A failure here never throws away the trained model (written before, `outputs.MODEL_FILES`): each format's
error is recorded in the report (and makes `prune` exit 1), what succeeded stays in the run folder, and any
other failure or a stop signal ends the run with a line saying what is kept (`pipeline.kept_after`).
"""

from __future__ import annotations

from catalyst_deploy.errors import CatalystDeployError


def deploy(cfg, s, dense, plan, report, folder, log) -> None:
    formats = list(cfg.export.formats)
    if cfg.bench.enabled and not formats:
        formats = ["onnx"]  # --bench alone: benchmark the ONNX files
    if not formats:
        return
    from catalyst_deploy.run.outputs import model_meta

    pruned = s.model.cpu().eval()
    example = s.example.cpu()
    meta = {k: str(v) for k, v in model_meta(report, s.info).items()}
    shipped = {}
    for fmt in formats:
        path = export_one(fmt, pruned, example, folder, "model", report, log, plan=plan, metadata=meta)
        if path is not None:
            shipped[fmt] = path
    if cfg.bench.enabled and shipped:
        report.latency = bench_files(cfg, dense, example, shipped, report, folder, log)


def export_one(fmt: str, model, example, folder, stem: str, report, log, plan=None, metadata=None):
    """Export `model` to `fmt` as STEM+suffix in the run folder; the path, or None (error in the report)."""
    from catalyst_deploy.exporters import export_model, output_paths
    from catalyst_deploy.formats import get_format

    name = f"{stem}{get_format(fmt).suffix}"
    options = export_options(report.config["export"], fmt)
    extras = {"plan": plan} if fmt == "torch" and plan is not None else {"metadata": metadata} if fmt == "onnx" and metadata else {}
    log(f"exporting {fmt} -> {name}")
    written = [p.name for p in output_paths(fmt, folder.file(name), with_plan=plan is not None and fmt == "torch")]
    try:
        with folder.writing(written):  # named in the marker before the files appear (RunFolder.writing)
            result = export_model(model, fmt, folder.file(name), example, **options, **extras)
    except Exception as err:  # any failure of one format (a runtime's own error too) is that format's result
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        message = text if isinstance(err, CatalystDeployError) else f"{type(err).__name__}: {text}"
        if stem == "model":
            report.exports[fmt] = {"error": message}
        log(f"{fmt} export failed: {message}")
        return None
    if stem == "model":
        report.exports[fmt] = {"path": name, "max_abs_diff": result.max_abs_diff, "atol": result.atol}
    return folder.file(name)


def bench_files(cfg, dense, example, shipped: dict, report, folder, log) -> dict:
    """Time each shipped file against the dense model exported the same way; bench.json/.md/.png."""
    from catalyst_deploy.bench.harness import merge_reports, run_benchmark
    from catalyst_deploy.bench.report import write_bench_files
    from catalyst_deploy.formats import get_format

    reports = []
    for fmt, pruned_path in shipped.items():
        dense_path = export_one(fmt, dense, example, folder, "dense", report, log)
        if dense_path is None:
            continue
        backends = _usable_backends(get_format(fmt).backends)
        if not backends:
            continue
        options = bench_options(cfg, backends, tuple(example.shape[1:]), report.macs.ratio)
        log(f"benchmarking {fmt} files on {', '.join(backends)}, batch {list(cfg.bench.batches)}")
        reports.append(run_benchmark(pruned_path, dense_path, options))
    if not reports:
        return {"error": "nothing could be benchmarked here"}
    merged = merge_reports(reports)
    write_bench_files(merged, folder.path, folder)
    from catalyst_deploy.render.bench import to_markdown

    cells = [{"backend": r["backend"], "batch": r["batch"], "ratio": r["latency_ratio"],
              "dense_ms": merged.cell(r["backend"], r["batch"], "baseline").stats.p50_ms,
              "pruned_ms": merged.cell(r["backend"], r["batch"], "pruned").stats.p50_ms} for r in merged.ratios()]
    return {"cells": cells, "bench_json": "bench.json", "markdown": to_markdown(merged)}


def bench_options(cfg, backends, sample_shape, flops_ratio=None):
    """The harness's options for --bench (also built by the preflight, so that a bad value fails before
    training)."""
    from catalyst_deploy.bench.harness import BenchOptions

    return BenchOptions(backends=backends, batches=cfg.bench.batches, input_shape=sample_shape,
                        threads=cfg.bench.threads, min_time_s=cfg.bench.min_time_s, min_runs=cfg.bench.min_runs,
                        flops_ratio=flops_ratio, trust_pickle=True)  # files this run wrote


def export_options(export_settings: dict, fmt: str) -> dict:
    """The keyword options of format `fmt` from the run's export settings; UsageError for a bad one."""
    from catalyst_deploy.exporters import ExportOptions

    return ExportOptions(**_options(export_settings, fmt)).for_format(fmt)


def _usable_backends(names) -> tuple[str, ...]:
    from catalyst_deploy.bench.backends import unavailable_reason

    return tuple(n for n in names if unavailable_reason(n) is None)


def _options(export_settings: dict, fmt: str) -> dict:
    """The recipe's export options that format `fmt` takes."""
    from catalyst_deploy.formats import get_format

    takes = get_format(fmt).options
    return {k: v for k, v in export_settings.items() if k in takes and v is not None}
