"""A finished training is never lost (issue 19): once the cut has happened the model's files are written
first, and no later failure or signal (an export's unexpected error, Ctrl-C in the export, SIGTERM in the
benchmark, kill -9) removes them; the run says what is kept and `--resume` finishes it with the same plan and
accuracy as an uninterrupted run. Settings that only the steps after training use are checked before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["prune", "zoo:tiny_cnn", "--data", "demo", "--steps-per-epoch", "5", "--reg-epochs", "1", "--recover-epochs",
        "1", "--threads", "1", "--export", "onnx", "--bench", "--bench-batch", "1"]
MODEL_FILES = ("pruned.pt", "pruned_state.pt", "plan.json", "model.json")
FIXED_BATCH_NET = '''
import torch
from torch import nn


class FixedBatch(nn.Module):
    """Exports while dense (the preflight check of --bench passes) and raises an error of a type the tool does
    not know when the pruned model is exported, as a model with an export-time assumption about its widths
    would (a ViT's static batch did once; the exporter handles that case now)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(4),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        exporting = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.compiler.is_compiling()
        if exporting and self.head.in_features < 16:
            raise RuntimeError("FixedBatch: exported with fewer than 16 features")
        x = self.features(x)
        return self.head(x.flatten(1))


def build(num_classes=10):
    return FixedBatch(num_classes)
'''


def start(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "catalyst_deploy", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def finish(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalyst_deploy", *ARGS, "--out", str(out), "--resume", *extra],
                          capture_output=True, text=True, timeout=600)


def error_line(stderr: str) -> str:
    """The tool's one error line (ONNX Runtime may log lines of its own before it)."""
    ours = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return ours[0]


def results(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "plan.json").read_text())["layers"], json.loads((out / "report.json").read_text())


def kept_snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in MODEL_FILES}


def stop_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> tuple[str, str]:
    """Send `sig` once `ready()` holds; the process's output."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.communicate(timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("kept") / "whole"
    proc = start(out)
    assert proc.wait(timeout=600) == 0, proc.communicate()
    return results(out)


def check_finishes_like_uninterrupted(out: Path, kept: dict[str, bytes], uninterrupted) -> None:
    again = finish(out)
    assert again.returncode == 0, again.stderr[-3000:]
    layers, report = results(out)
    assert layers == uninterrupted[0]
    assert report["accuracy"] == uninterrupted[1]["accuracy"]
    assert report["exports"]["onnx"]["path"] == "model.onnx" and (out / "bench.json").is_file()
    assert kept_snapshot(out) == kept  # a resume only redoes what is left; the same model, byte for byte
    assert json.loads((out / ".catalyst-deploy-run.json").read_text())["status"] == "done"
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_ctrl_c_during_the_export_keeps_the_model_and_resume_finishes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out)
    _, err = stop_when(proc, lambda: (out / "model.json").is_file(), signal.SIGINT)
    assert proc.returncode == 130
    line = error_line(err)
    assert "SIGINT" in line and "kept" in line and "pruned.pt" in line and "--resume" in line
    kept = kept_snapshot(out)
    check_finishes_like_uninterrupted(out, kept, uninterrupted)


@pytest.mark.slow
def test_sigterm_during_the_benchmark_keeps_everything_and_leaves_no_temp_folder(tmp_path, uninterrupted):
    out, temp = tmp_path / "run", tmp_path / "tmp"
    temp.mkdir()
    proc = start(out, env={"TMPDIR": str(temp)})
    _, err = stop_when(proc, lambda: any(temp.glob("catalyst-deploy-bench-*")), signal.SIGTERM)
    assert proc.returncode == 143
    line = error_line(err)
    assert "SIGTERM" in line and "kept" in line and "--resume" in line
    assert (out / "model.onnx").is_file() and (out / "dense.onnx").is_file()  # what succeeded stays too
    assert not list(temp.glob("catalyst-deploy-*"))
    check_finishes_like_uninterrupted(out, kept_snapshot(out), uninterrupted)


@pytest.mark.slow
def test_kill_9_during_the_export_then_resume_finishes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out)
    stop_when(proc, lambda: (out / "model.json").is_file(), signal.SIGKILL)
    kept = kept_snapshot(out)
    check_finishes_like_uninterrupted(out, kept, uninterrupted)


@pytest.mark.slow
def test_an_unexpected_export_error_keeps_the_model_and_names_the_format(tmp_path):
    (tmp_path / "keptnets").mkdir()
    (tmp_path / "keptnets" / "__init__.py").write_text("")
    (tmp_path / "keptnets" / "fixed.py").write_text(FIXED_BATCH_NET)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    args = [a if a != "zoo:tiny_cnn" else "keptnets.fixed:build" for a in ARGS]
    result = subprocess.run([sys.executable, "-m", "catalyst_deploy", *args, "--out", str(out)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert "onnx" in line and "FixedBatch" in line and "kept" in line and "--resume" in line
    assert all((out / name).is_file() for name in MODEL_FILES)
    assert json.loads((out / ".catalyst-deploy-run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("flags, words", [(["--bench-batch", "0"], ["bench.batches", ">= 1"]),
                                          (["--bench-batch", "1,100000"], ["bench.batches"]),
                                          (["--recipe", "{opset}"], ["opset"])])
def test_settings_of_the_steps_after_training_are_checked_before_it(tmp_path, flags, words):
    recipe = tmp_path / "late.yaml"
    recipe.write_text("export:\n  opset: 99\n")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "catalyst_deploy", *ARGS, "--out", str(out),
                             *[f.replace("{opset}", str(recipe)) for f in flags]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert all(word in line for word in words), line
    assert "accuracy" not in result.stdout  # refused before the dense model was even measured
    assert not out.exists()
