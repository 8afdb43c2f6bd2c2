"""Each reliability defect (issue 9) reproduced through the real CLI: one line on stderr, exit 1 or 2, no
traceback, nothing half-written; the divergence guard; failures before the expensive part."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catalyst_deploy.inputs.zoo import tiny_cnn

TINY = ["--data", "demo", "--steps-per-epoch", "2", "--reg-epochs", "1", "--recover-epochs", "1", "--threads", "1"]


def cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalyst_deploy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_settings_are_refused_at_parse_time(tmp_path, value):
    one_line(cli("prune", "zoo:tiny_cnn", *TINY, "--lr", value, "--out", str(tmp_path / "o")), 2, "finite")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_diverging_run_stops_with_the_step_and_writes_no_model(tmp_path):
    out = tmp_path / "o"
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--steps-per-epoch", "6", "--lr", "1e6", "--out", str(out))
    one_line(result, 1, "diverged", "step", "checkpoint")
    assert not (out / "pruned.pt").exists() and not (out / "pruned_state.pt").exists()


def test_a_budget_that_prunes_nothing_is_refused_before_training(tmp_path):
    one_line(cli("prune", "zoo:tiny_cnn", *TINY, "--target-flops", "2.0G", "--out", str(tmp_path / "o")), 2,
             "nothing would be pruned")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, words", [(["--target-flops", "0.001"], ["cannot be reached", "most these limits"]),
                                          (["--round-to", "1000"], ["cannot be reached"])])
def test_an_unreachable_target_names_the_reachable_minimum_before_training(tmp_path, flags, words):
    one_line(cli("prune", "zoo:small_resnet", *TINY, *flags, "--out", str(tmp_path / "o")), 2, *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without TensorRT")
def test_a_missing_tensorrt_is_reported_before_training(tmp_path):
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--export", "onnx,trt", "--out", str(tmp_path / "o"))
    one_line(result, 1, "--export trt", "catalyst-deploy[tensorrt]")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["prune", "export", "bench"])
def test_an_input_shape_the_model_cannot_take_is_one_line(tmp_path, command):
    model = tmp_path / "m.pt"
    torch.save(tiny_cnn(), model)  # a 1-channel model
    args = {"prune": ["prune", str(model), *TINY, "--input-shape", "1,3,28,28", "--out", str(tmp_path / "o")],
            "export": ["export", str(model), "--format", "onnx", "--input-shape", "1,3,28,28", "--out", str(tmp_path / "m.onnx")],
            "bench": ["bench", str(model), "--input-shape", "3,28,28", "--batch", "1", "--min-runs", "2"]}[command]
    result = cli(*args)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr[-2000:]
    if command != "bench":
        one_line(result, 2, "does not run on")
    else:  # bench reports the failure in its rows and exits 1: the pruned model was measured nowhere
        assert result.returncode == 1


def test_bench_exits_1_when_the_model_under_test_cannot_be_loaded(tmp_path):
    dense = tmp_path / "dense.onnx"
    assert cli("export", "zoo:tiny_cnn", "--format", "onnx", "--input-shape", "1,1,28,28", "--out", str(dense)).returncode == 0
    broken = tmp_path / "pruned.onnx"
    broken.write_bytes(dense.read_bytes()[: len(dense.read_bytes()) // 2])
    result = cli("bench", str(broken), "--baseline", str(dense), "--batch", "1", "--min-runs", "2", "--min-time", "0")
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr


def test_export_without_a_shape_names_both_channel_layouts(tmp_path):
    one_line(cli("export", "zoo:tiny_cnn", "--format", "onnx", "--out", str(tmp_path / "m.onnx")), 2, "1,1,28,28",
             "1,3,224,224")


def test_a_corrupt_image_is_reported_with_its_path(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    bad = tmp_path / "data" / "train" / "b" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    result = cli("prune", "zoo:tiny_cnn", "--data", f"imagefolder:{tmp_path / 'data'}", "--input-shape", "1,3,16,16",
                 "--batch-size", "8", "--steps-per-epoch", "1", "--out", str(tmp_path / "o"))
    one_line(result, 2, "cannot read image", "2.png")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, read-only even for root")
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path):
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--out", "/sys/kernel/catalyst-deploy-test-run")
    one_line(result, 1, "/sys/kernel/catalyst-deploy-test-run")


def test_a_text_file_as_model_or_weights_is_one_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    one_line(cli("prune", str(text), *TINY, "--out", str(tmp_path / "o")), 2, "not a readable PyTorch checkpoint")
    one_line(cli("prune", "zoo:tiny_cnn", *TINY, "--weights", str(text), "--out", str(tmp_path / "o")), 2,
             "not a readable PyTorch checkpoint")


def test_unexpected_errors_are_one_line_with_the_debug_hint(tmp_path):
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("def build(**kw):\n    raise ZeroDivisionError('bad factory')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "catalyst_deploy", "prune", "brokenpkg.nets:build", *TINY,
                             "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr and "bad factory" in result.stderr


def test_gzip_idx_data_that_is_truncated_is_one_line(tmp_path):
    data = tmp_path / "fm"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:10])
    one_line(cli("prune", "zoo:tiny_cnn", "--data", f"fashion-mnist:{data}", "--out", str(tmp_path / "o")), 2)
