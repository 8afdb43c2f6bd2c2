"""`catalyst-deploy check`: what a model offers to pruning, without data or training, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

CLI = [sys.executable, "-m", "catalyst_deploy.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def test_check_a_tiny_vision_transformer_as_json():
    result = run_cli("check", "zoo:tiny_vit", "--input-shape", "1,1,28,28", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["schema"] == "catalyst-deploy/check-report/1" and report["status"] == "ok"
    assert {row["kind"] for row in report["groups"]} == {"heads", "channels"}
    heads = [row for row in report["groups"] if row["kind"] == "heads"]
    assert [row["size"] for row in heads] == [4, 4] and all(row["unit_width"] == 16 for row in heads)
    assert all(row["macs_per_unit"] > 0 for row in report["groups"])
    assert "output layer" in report["left_alone"]["heads.head"]
    assert any("--prune-embedding" in why for why in report["left_alone"].values())
    assert report["cut"]["macs_ratio"] <= 0.5 and report["min_macs_ratio"] < report["cut"]["macs_ratio"]
    parity = report["cut"]["parity"]["cut"]
    assert set(parity) == {"1", "3"} and max(parity.values()) <= 1e-4  # batch 1 and 3 of one dynamic-batch file
    assert len(report["converted"]) == 2


def test_check_prints_tables_and_times_the_cut_with_bench():
    result = run_cli("check", "zoo:tiny_cnn", "--input-shape", "1,1,28,28", "--bench", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("Channel groups", "Left alone", "least reachable", "ONNX parity (cut)", "ORT CPU latency", "status"):
        assert text in result.stdout, text


def test_a_model_with_nothing_to_prune_is_one_line_with_what_to_do(tmp_path):
    model_file = tmp_path / "linear.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), model_file)
    result = run_cli("check", str(model_file), "--input-shape", "1,1,2,2")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no channel group can be cut" in error[0] and "--ignore fewer" in error[0]


def test_an_unreachable_target_names_the_least_reachable_share():
    from catalyst_deploy import api

    report = api.check(api.load_check_config(model="zoo:tiny_cnn", input_shape="1,1,28,28", target_flops="0.001"),
                       log=lambda _m: None)
    assert report.status == "failed" and "cannot be reached: the most these limits allow is" in report.reason
    assert report.cut is None  # nothing was cut or exported


@pytest.mark.parametrize("args, message", [(["torchvision:resnet5"], "did you mean 'resnet50'"),
                                           (["zoo:tiny_cnn", "--input-shape", "1,3"], "N,C,H,W"),
                                           (["zoo:tiny_cnn", "--input-shape", "1,3,28,28"], "does not run on")])
def test_bad_input_is_a_usage_error(args, message):
    result = run_cli("check", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
