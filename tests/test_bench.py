"""Benchmark harness: statistics from real timings, interleaving, the bench.json schema, failing backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from catalyst_deploy.bench.harness import BenchOptions, run_benchmark, time_interleaved
from catalyst_deploy.bench.macs import onnx_macs
from catalyst_deploy.bench.report import SCHEMA, write_bench_files
from catalyst_deploy.bench.stats import LatencyStats
from catalyst_deploy.errors import UsageError
from catalyst_deploy.exporters.onnx import open_ort_session, torch_to_onnx

ROW_KEYS = {"backend", "batch", "model", "ok", "error", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
            "min_ms", "throughput_ips"}
QUICK = dict(warmup=2, min_time_s=0.05, min_runs=5, threads=1)


def cnn(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4)).eval()


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    """(dense.onnx, pruned.onnx): the same CNN at 32 and 16 channels."""
    folder = tmp_path_factory.mktemp("models")
    paths = folder / "dense.onnx", folder / "pruned.onnx"
    for width, path in zip((32, 16), paths):
        torch_to_onnx(cnn(width), torch.randn(1, 3, 24, 24), path)
    return paths


# ---- statistics -----------------------------------------------------------------------------------
def test_latency_stats_match_numpy_on_known_times():
    seconds = [0.001 * k for k in range(1, 101)]
    stats = LatencyStats.from_seconds(seconds, batch=4)
    ms = np.array(seconds) * 1e3
    assert stats.runs == 100 and stats.min_ms == pytest.approx(1.0)
    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms) == pytest.approx(tuple(np.percentile(ms, [50, 90, 99])))
    assert stats.mean_ms == pytest.approx(ms.mean()) and stats.std_ms == pytest.approx(ms.std(ddof=1))
    assert stats.throughput_ips == pytest.approx(4 / (stats.p50_ms / 1e3))


def test_interleaving_alternates_and_meets_both_minimums():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = time_interleaved(calls, warmup=1, min_time_s=0.0, min_runs=4)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then ABBA rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    slow = time_interleaved({"x": lambda: __import__("time").sleep(0.002)}, warmup=0, min_time_s=0.03, min_runs=2)
    assert len(slow["x"]) >= 2 and sum(slow["x"]) >= 0.03


def test_onnx_sessions_do_not_spin(onnx_pair):
    options = open_ort_session(onnx_pair[0]).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# ---- harness --------------------------------------------------------------------------------------
def test_dense_vs_pruned_on_ort_cpu(onnx_pair):
    dense, pruned = onnx_pair
    report = run_benchmark(pruned, dense, BenchOptions(backends=("ort-cpu",), batches=(1, 3), **QUICK))
    assert [(r.batch, r.model) for r in report.rows] == [(1, "baseline"), (1, "pruned"), (3, "baseline"), (3, "pruned")]
    for row in report.rows:
        s = row.stats
        assert row.ok and row.error is None and s.batch == row.batch
        assert s.runs >= QUICK["min_runs"] and s.mean_ms * s.runs >= 1e3 * QUICK["min_time_s"]  # both minimums met
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.throughput_ips == pytest.approx(row.batch * 1e3 / s.p50_ms)
    expected_ratio = report.cell("ort-cpu", 3, "pruned").stats.p50_ms / report.cell("ort-cpu", 3, "baseline").stats.p50_ms
    assert report.latency_ratio("ort-cpu", 3) == pytest.approx(expected_ratio)
    assert report.flops_ratio == pytest.approx(onnx_macs(pruned) / onnx_macs(dense))
    assert 0.2 < report.flops_ratio < 0.35  # 16 vs 32 channels: about a quarter of the conv MACs


def test_a_failing_backend_is_reported_and_the_others_run(onnx_pair, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    options = BenchOptions(backends=("trt", "ort-cpu"), batches=(1,), input_shape=(3, 24, 24), **QUICK)
    report = run_benchmark(onnx_pair[1], corrupt, options)
    by_cell = {(r.backend, r.model): r for r in report.rows}
    assert not by_cell["ort-cpu", "baseline"].ok and "corrupt.onnx" in by_cell["ort-cpu", "baseline"].error
    assert by_cell["ort-cpu", "pruned"].ok
    if not (torch.cuda.is_available() and __import__("importlib").util.find_spec("tensorrt")):
        assert "TensorRT" in by_cell["trt", "pruned"].error and not by_cell["trt", "pruned"].ok
    assert report.ok and report.latency_ratio("ort-cpu", 1) is None


def test_torch_modules_run_on_torch_and_on_ort_after_export():
    options = BenchOptions(backends=("torch", "ort-cpu"), batches=(2,), input_shape=(1, 3, 16, 16), **QUICK)
    report = run_benchmark(cnn(8), cnn(16), options)
    assert all(row.ok for row in report.rows) and len(report.rows) == 4
    assert report.flops_ratio is not None and report.flops_ratio < 0.5


def test_onnx_file_cannot_run_on_the_torch_backend(onnx_pair):
    report = run_benchmark(onnx_pair[1], options=BenchOptions(backends=("torch",), **QUICK))
    assert not report.ok and "PyTorch" in report.rows[0].error


def test_bad_inputs_are_usage_errors(onnx_pair, tmp_path):
    with pytest.raises(UsageError, match="did you mean 'ort-cpu'"):
        BenchOptions(backends=("ort-cpux",))
    with pytest.raises(UsageError, match="not found"):
        run_benchmark(tmp_path / "missing.onnx")
    with pytest.raises(UsageError, match="input shape"):
        run_benchmark(cnn(4))


# ---- report ---------------------------------------------------------------------------------------
def test_bench_json_schema_is_stable_and_files_are_written(onnx_pair, tmp_path):
    options = BenchOptions(backends=("ort-cpu", "ort-cuda"), batches=(1,), flops_ratio=0.5, **QUICK)
    report = run_benchmark(onnx_pair[1], onnx_pair[0], options)
    paths = write_bench_files(report, tmp_path / "out")
    data = json.loads(paths["bench.json"].read_text())
    assert set(data) == {"schema", "created_utc", "machine", "settings", "models", "input_shape", "flops_ratio",
                         "rows", "ratios"}
    assert data["schema"] == SCHEMA and data["flops_ratio"] == 0.5 and data["input_shape"] == [3, 24, 24]
    assert set(data["machine"]) == {"platform", "python", "cpu_count", "gpu", "versions"}
    assert set(data["machine"]["versions"]) == {"torch", "onnxruntime", "tensorrt"}
    assert set(data["settings"]) == {"backends", "batches", "threads", "warmup", "min_time_s", "min_runs", "precision",
                                     "statistic"}
    assert set(data["models"]) == {"baseline", "pruned"}
    assert all(set(row) == ROW_KEYS for row in data["rows"])
    failed = [row for row in data["rows"] if not row["ok"]]
    assert all(row["p50_ms"] is None and row["error"] for row in failed)
    assert [set(r) for r in data["ratios"]] == [{"backend", "batch", "latency_ratio", "speedup"}]
    assert "| backend | batch | model |" in paths["bench.md"].read_text()
    assert paths["latency.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- latency-aware pruning inputs ----------------------------------------------------------------
def test_layer_latency_profile_matches_every_conv_and_drives_the_cut():
    from catalyst_deploy.bench.environment import channel_multiple
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.latency.layers import (conv_shapes, group_latency_per_mac, group_weights,
                                                     profile_conv_latency)
    from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms
    from catalyst_deploy.surgery.macs import count_macs, layer_macs
    from catalyst_deploy.surgery.plan import apply_plan

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1, groups=24),
                          nn.ReLU(), nn.Conv2d(24, 40, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(40, 4)).eval()
    example = torch.randn(1, 3, 20, 20)
    shapes = conv_shapes(model, example)
    layer_ms = profile_conv_latency(model, example, threads=1, runs=3)
    assert set(layer_ms) == set(shapes) == {"0", "2", "4"}  # 24 channels: ORT pads them to its block
    assert all(ms > 0 for ms in layer_ms.values())
    graph = ChannelGraph(model, example)
    per_mac = group_latency_per_mac(graph, layer_macs(model, example), layer_ms)
    assert per_mac.shape == (len(graph.sizes),) and bool((per_mac > 0).all())
    # alpha 0 is uniform pruning: every group keeps the same share (the latency weights all equal 1)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.5 * count_macs(model, example)[0], None, 0.9,
                    group_weights(per_mac, alpha=0.0))
    norms = channel_norms(graph.producer_slices(), graph.num_channels)
    apply_plan(model, graph.plan_for(budget.select(-norms)))
    kept = [model[0].out_channels / 24, model[4].out_channels / 40]
    assert abs(kept[0] - kept[1]) < 0.1 and max(kept) < 1
    assert channel_multiple(needs_gpu=True) == 8 and channel_multiple(needs_gpu=False) in (8, 16)


def test_api_bench_writes_the_report_files(tmp_path):
    from catalyst_deploy import api

    report = api.bench(cnn(8), cnn(16), BenchOptions(backends=("ort-cpu",), input_shape=(3, 16, 16), **QUICK),
                       out_dir=tmp_path)
    written = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert report.ok and written == {"bench.json", "bench.md", "latency.png"}
