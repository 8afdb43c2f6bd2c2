"""`catalyst-deploy export / bench / env` through a real subprocess: help, JSON, exit codes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

HAS_TRT_AND_GPU = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalyst_deploy.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3)).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A whole pickled module made only of torch.nn classes."""
    path = tmp_path_factory.mktemp("cli") / "small.pt"
    torch.save(small_cnn(), path)
    return path


def test_help_lists_the_registries_without_importing_torch():
    code = ("import sys; from typer.testing import CliRunner; from catalyst_deploy.cli import app; "
            "outs = [CliRunner().invoke(app, [c, '--help']) for c in ('export', 'bench', 'env')]; "
            "assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules]; "
            "assert not heavy, heavy; print(outs[0].output + outs[1].output)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("onnx", "trt", "torch", "ort-cpu", "ort-cuda", "ort-trt", "torch-cudagraph"):
        assert name in result.stdout


def test_help_of_each_command_exits_0():
    for command in ("export", "bench", "env"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_env_json_reports_versions_and_usable_backends():
    result = cli("env", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["versions"]["torch"] and report["versions"]["onnxruntime"]
    assert report["backends"]["ort-cpu"] == {"usable": True, "reason": None}
    assert report["exporters"]["onnx"]["usable"] is True
    assert report["backends"]["trt"]["usable"] is HAS_TRT_AND_GPU
    assert set(report["cuda"]) == {"available", "torch_cuda", "devices"}


def test_bad_backend_is_exit_2_with_a_suggestion(tmp_path):
    result = cli("bench", str(tmp_path / "m.onnx"), "--backend", "ort-cpux")
    assert result.returncode == 2 and "did you mean 'ort-cpu'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_model_file_is_exit_2(tmp_path):
    bench = cli("bench", str(tmp_path / "missing.onnx"))
    export = cli("export", str(tmp_path / "missing.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--input-shape", "1,3,16,16")
    assert bench.returncode == 2 and "not found" in bench.stderr
    assert export.returncode == 2 and "not found" in export.stderr


def test_export_then_bench_dense_vs_pruned(model_file, tmp_path):
    out = tmp_path / "small.onnx"
    export = cli("export", str(model_file), "--format", "onnx", "--out", str(out), "--input-shape", "1,3,16,16", "--json")
    assert export.returncode == 0, export.stderr
    assert json.loads(export.stdout)["max_abs_diff"] <= json.loads(export.stdout)["atol"] and out.is_file()
    bench = cli("bench", str(out), "--baseline", str(out), "--backend", "ort-cpu,trt", "--batch", "1,2",
                "--min-time", "0.02", "--min-runs", "3", "--threads", "1", "--out", str(tmp_path / "b"), "--json")
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert {(r["backend"], r["batch"]) for r in report["rows"] if r["ok"]} >= {("ort-cpu", 1), ("ort-cpu", 2)}
    assert {p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith(".")} == {"bench.json", "bench.md",
                                                                                         "latency.png"}


def test_export_without_input_shape_or_with_a_wrong_option_is_exit_2(model_file, tmp_path):
    no_shape = cli("export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    wrong = cli("export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                "--input-shape", "1,3,16,16", "--precision", "fp16")
    typo = cli("export", str(model_file), "--format", "onx", "--out", str(tmp_path / "m.onnx"))
    assert no_shape.returncode == 2 and "--input-shape" in no_shape.stderr
    assert wrong.returncode == 2 and "does not apply" in wrong.stderr
    assert typo.returncode == 2 and "did you mean 'onnx'" in typo.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(HAS_TRT_AND_GPU, reason="TensorRT and a GPU are present")
def test_trt_export_without_tensorrt_is_one_line_exit_1(model_file, tmp_path):
    result = cli("export", str(model_file), "--format", "trt", "--out", str(tmp_path / "m.engine"),
                 "--input-shape", "1,3,16,16")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "TensorRT" in result.stderr or "CUDA GPU" in result.stderr
    assert not (tmp_path / "m.engine").exists()
