"""The smaller cases of issue 19, each through the real CLI (or the API where it is the API's promise): a clean
one-line error with exit code 1 or 2, nothing left in the temp folder, no unbounded work."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--data", "demo", "--steps-per-epoch", "2", "--reg-epochs", "1", "--recover-epochs", "1", "--threads", "1"]


def cli(*args: str, env: dict | None = None, timeout: int = 300, limits: dict | None = None) -> subprocess.CompletedProcess:
    def set_limits():
        for which, value in (limits or {}).items():
            resource.setrlimit(which, (value, value))

    return subprocess.run([sys.executable, "-m", "catalyst_deploy", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, preexec_fn=set_limits)


def one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]
    return lines[0]


def alias_bomb(key: str, levels: int = 9) -> str:
    """YAML whose `key` stands for 9**levels items through aliases (a few hundred bytes on disk)."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"{key}: [{', '.join(anchors)}]\n"


@pytest.mark.parametrize("recipe, words", [(alias_bomb("lr"), ["setting lr", "..."]),
                                           ("export: [onnx]\n", ["'export'", "mapping"]),
                                           ("bench: 5\n", ["'bench'", "mapping"]),
                                           ("5: 3\n", ["unknown setting 5"]),
                                           ("lr: " + "9" * 400 + "\n", ["setting lr"])])
def test_a_bad_recipe_value_is_one_short_line_in_bounded_time_and_memory(tmp_path, recipe, words):
    path = tmp_path / "bad.yaml"
    path.write_text(recipe)
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--recipe", str(path), "--out", str(tmp_path / "o"), timeout=120,
                 limits={resource.RLIMIT_AS: 3 << 30})  # the settings are read before torch is loaded
    one_line(result, 2, *words)
    assert not (tmp_path / "o").exists()


def test_a_learning_rate_too_big_for_float32_is_a_usage_error(tmp_path):
    one_line(cli("prune", "zoo:tiny_cnn", *TINY, "--lr", "1e308", "--out", str(tmp_path / "o")), 2, "setting lr")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "m.onnx"
    result = cli("export", "zoo:tiny_cnn", "--format", "onnx", "--input-shape", "1,1,28,28", "--out", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    return path


@pytest.mark.parametrize("value", ["inf", "1e300", "nan"])
def test_bench_min_time_must_be_bounded(onnx_file, value):
    one_line(cli("bench", str(onnx_file), "--min-time", value, "--min-runs", "1", timeout=120), 2, "min_time_s")


def test_sigterm_during_bench_is_one_line_and_leaves_no_temp_folder(tmp_path, onnx_file):
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "catalyst_deploy", "bench", str(onnx_file), "--min-time", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.time() + 120
    while not any(temp.glob("catalyst-deploy-bench-*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1)  # inside the timing loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    one_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), 143, "SIGTERM")
    assert not list(temp.glob("catalyst-deploy-*"))


@pytest.mark.slow
def test_latency_aware_runs_leave_no_profile_folder(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--latency-aware", "ort-cpu", "--out", str(tmp_path / "o"),
                 env={"TMPDIR": str(temp)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(temp.glob("catalyst-deploy-*"))


def test_a_one_class_image_folder_is_refused_before_training(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        folder = tmp_path / "data" / split / "cat"
        folder.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    result = cli("prune", "zoo:tiny_cnn", "--data", f"imagefolder:{tmp_path / 'data'}", "--input-shape", "1,3,16,16",
                 "--batch-size", "2", "--steps-per-epoch", "1", "--out", str(tmp_path / "o"))
    one_line(result, 2, "at least 2")
    assert not (tmp_path / "o").exists()


def test_a_write_that_hits_the_file_size_limit_is_one_line_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "o"
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(out), limits={resource.RLIMIT_FSIZE: 20 << 10})
    one_line(result, 1, "cannot write", "last.pt", "ulimit -f")
    assert not list(tmp_path.rglob("*.partial*"))


MALFORMED_PLANS = [{}, [], {"format": 1}, {"format": 1, "layers": []},
                   {"format": 1, "layers": {"nope": {"out": {"size": 16, "keep": [0]}}}},
                   {"format": 1, "layers": {"features.0.0": "x"}},
                   {"format": 1, "layers": {"features.0.0": {"out": {"size": 16, "keep": [99]}}}},
                   {"format": 1, "layers": {"features.0.0": {"out": {"size": 16, "keep": ["0"]}}}},
                   {"format": 1, "layers": {"features.0.0": {"out": {"size": 16}}}},
                   {"format": 1, "layers": {"": {"out": {"size": 16, "keep": [0]}}}},
                   {"format": 1, "layers": {}}]


@pytest.mark.parametrize("plan", MALFORMED_PLANS)
def test_rebuild_pruned_on_a_malformed_plan_is_a_usage_error(plan):
    from catalyst_deploy.errors import UsageError
    from catalyst_deploy.inputs.zoo import tiny_cnn
    from catalyst_deploy.surgery.plan import rebuild_pruned

    with pytest.raises(UsageError):
        rebuild_pruned(tiny_cnn(), plan, {"not": "a state dict of it"})
