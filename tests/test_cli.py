"""The prune/demo command line through a real subprocess: help, the demo, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CLI = [sys.executable, "-m", "catalyst_deploy.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.parametrize("command", [[], ["prune"], ["demo"]])
def test_help_works_and_explains(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if command == ["prune"]:
        for option in ("--target-flops", "--method", "--data", "--round-to", "--trust-pickle", "--export"):
            assert option in result.stdout


def test_help_does_not_import_torch():
    code = "import sys; from catalyst_deploy import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = run_cli("demo", "--steps-per-epoch", "3", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_demo_tells_the_whole_story_from_the_pretrained_model(demo_run):
    report = json.loads((demo_run / "report.json").read_text())
    assert report["accuracy"]["dense"] > 85  # the shipped pretrained model, not one trained at demo time
    assert report["macs"]["ratio"] <= 0.5
    for name in ("pruned.pt", "pruned_state.pt", "plan.json", "model.json", "report.md", "model.onnx", "dense.onnx",
                 "bench.json", "latency.png"):
        assert (demo_run / name).is_file(), name
    batches = {cell["batch"] for cell in report["latency"]["cells"] if cell["backend"] == "ort-cpu"}
    assert batches == {1, 8} and all(cell["ratio"] > 0 for cell in report["latency"]["cells"])
    model = torch.load(demo_run / "pruned.pt", weights_only=False)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert "right after the cut" in (demo_run / "report.md").read_text()


@pytest.mark.slow
def test_a_run_folder_exports_and_benches_without_a_shape_flag(demo_run, tmp_path):
    onnx_out = tmp_path / "again.onnx"
    export = run_cli("export", str(demo_run), "--format", "onnx", "--out", str(onnx_out), "--json")
    assert export.returncode == 0, export.stderr[-2000:]
    assert json.loads(export.stdout)["max_abs_diff"] <= json.loads(export.stdout)["atol"]
    from catalyst_deploy.exporters.onnx import read_metadata

    assert read_metadata(onnx_out)["source_model"] == "zoo:fashion_small_resnet"
    bench = run_cli("bench", str(demo_run), "--batch", "1", "--min-runs", "3", "--min-time", "0.05", "--json")
    assert bench.returncode == 0, bench.stderr[-2000:]
    rows = json.loads(bench.stdout)["rows"]
    assert {(r["model"], r["ok"]) for r in rows} == {("baseline", True), ("pruned", True)}
    assert json.loads(bench.stdout)["input_shape"] == [1, 28, 28]


@pytest.mark.parametrize("args, message", [
    (["prune", "missing.pt", "--data", "demo"], "model file not found"),
    (["prune", "nosuchprefix:thing", "--data", "demo"], "nosuchprefix"),
    (["prune", "zoo:tiny_cnn", "--data", "demo", "--target-flops", "0"], "between 0 and 1"),
    (["prune", "zoo:tiny_cnn", "--data", "demo", "--target-flops", "1.5"], "between 0 and 1"),
    (["prune", "zoo:tiny_cnn", "--data", "demo", "--target-flops", "abc"], "not a number"),
    (["prune", "zoo:tiny_cnn", "--data", "demo", "--method", "catalist"], "did you mean 'catalyst'"),
    (["prune", "zoo:tiny_cnn", "--data", "nosuch:/x"], "nosuch"),
])
def test_bad_input_is_one_line_with_exit_code_2_and_no_output_folder(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_cli(*args, "--out", str(out))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".run.partial-*"))


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_a_folder_with_user_files_is_never_overwritten(tmp_path, flag):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("prune", "zoo:tiny_cnn", "--data", "demo", "--out", str(out), *flag)
    assert result.returncode == 2 and "did not write (keep.txt)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
