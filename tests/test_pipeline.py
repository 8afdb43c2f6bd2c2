"""The prune pipeline through the Python API: every method, outputs, export + benchmark chaining."""

from __future__ import annotations

import json

import pytest
import torch

from catalyst_deploy import api
from catalyst_deploy.surgery import load_plan, rebuild_pruned
from catalyst_deploy.zoo import small_resnet

FAST = dict(data="demo", train_limit=512, test_limit=256, batch_size=64, steps_per_epoch=4, reg_epochs=2,
            recover_epochs=1, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["catalyst", "l1", "group-lasso", "slimming", "taylor", "random"])
def test_every_method_runs_the_same_pipeline_to_the_target(tmp_path, method):
    cfg = api.load_config(model="zoo:small_resnet", method=method, out=str(tmp_path / method), **FAST)
    report = api.prune(cfg, log=lambda _m: None)
    assert report["macs"]["ratio"] <= 0.5
    assert report["macs"]["ratio"] >= 0.35  # lands near the target, not far below it
    assert set(report["accuracy"]) == {"dense", "after_regularization", "after_surgery", "final"}
    # the pruned model rebuilds from architecture + plan + state dict, without pickle
    out = tmp_path / method
    rebuilt = rebuild_pruned(small_resnet(), load_plan(out / "plan.json"),
                             torch.load(out / "pruned_state.pt", weights_only=True))
    pickled = torch.load(out / "pruned.pt", weights_only=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pickled.eval()(x))


@pytest.mark.slow
def test_catalyst_cut_is_lossless_in_the_pipeline(tmp_path):
    cfg = api.load_config(model="zoo:small_resnet", out=str(tmp_path / "c"), **{**FAST, "reg_epochs": 6})
    report = api.prune(cfg, log=lambda _m: None)
    acc = report["accuracy"]
    assert report["catalyst"]["frozen_at_zero"]
    assert acc["after_surgery"] == acc["after_regularization"]
    assert (tmp_path / "c" / "bifurcation.png").stat().st_size > 1000


@pytest.mark.slow
def test_export_and_bench_are_chained_into_the_report(tmp_path):
    out = tmp_path / "deploy"
    cfg = api.load_config(model="zoo:tiny_cnn", out=str(out), export="onnx", bench=True, bench_batches="1",
                          latency_aware="ort-cpu", **{**FAST, "reg_epochs": 1})
    report = api.prune(cfg, log=lambda _m: None)
    assert report["exports"]["onnx"]["max_abs_diff"] <= report["exports"]["onnx"]["atol"]
    ratios = {r["backend"]: r["latency_ratio"] for r in report["latency"]["ratios"]}
    assert ratios["ort-cpu"] is not None and ratios["ort-cpu"] > 0
    bench = json.loads((out / "bench.json").read_text())
    assert {row["model"] for row in bench["rows"]} == {"baseline", "pruned"}
    assert "## Latency" in (out / "report.md").read_text()
    assert (out / "model.onnx").is_file() and (out / "latency.png").is_file()
    assert len(report["latency_aware"]["group_weight"]) > 0


def test_failed_run_leaves_nothing_behind(tmp_path):
    cfg = api.load_config(model="zoo:small_resnet", out=str(tmp_path / "bad"), target_flops="0.001", **FAST)
    with pytest.raises(Exception, match="cannot be reached"):
        api.prune(cfg, log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []
