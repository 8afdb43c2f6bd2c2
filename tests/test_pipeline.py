"""The prune pipeline through the Python API: every method, outputs, equal steps, export + benchmark."""

from __future__ import annotations

import json

import pytest
import torch

from catalyst_deploy import api
from catalyst_deploy.surgery.plan import load_plan, rebuild_pruned
from catalyst_deploy.report import load_report
from catalyst_deploy.inputs.zoo import small_resnet

FAST = dict(data="demo", train_limit=512, test_limit=256, batch_size=64, steps_per_epoch=4, reg_epochs=2,
            recover_epochs=1, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["catalyst", "l1", "group-lasso", "slimming", "taylor", "random"])
def test_every_method_runs_the_same_pipeline_to_the_target(tmp_path, method):
    cfg = api.load_config(model="zoo:small_resnet", method=method, out=str(tmp_path / method), **FAST)
    seen = []
    report = api.prune(cfg, log=seen.append)
    assert 0.35 <= report.macs.ratio <= 0.5  # at the target, not far below it
    # the method's set-up (the default Catalyst fits its MACs count there, 11 s on resnet50) is announced
    setup = seen.index(f"{method}: setting up on 6 channel groups")
    assert setup < seen.index(next(line for line in seen if line.startswith("accuracy after regularization")))
    # after_decision: only where the method forced part of its prune set when it decided (short budgets)
    assert set(report.accuracy) - {"after_decision"} == {"dense", "after_regularization", "after_surgery", "final"}
    method_record = report.method or {}
    assert ("after_decision" in report.accuracy) == bool(method_record.get("forced_to_zero") or method_record.get("revived"))
    # every method gets the same optimizer steps in all: an early cut gives the rest to recovery
    assert report.steps["regularize"] + report.steps["recover"] == 3 * 4
    # the pruned model rebuilds from architecture + plan + state dict, without pickle
    out = tmp_path / method
    rebuilt = rebuild_pruned(small_resnet(), load_plan(out / "plan.json"),
                             torch.load(out / "pruned_state.pt", weights_only=True))
    pickled = torch.load(out / "pruned.pt", weights_only=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pickled.eval()(x))
    assert load_report(out / "report.json").macs.pruned == report.macs.pruned
    assert json.loads((out / "report.json").read_text())["schema"] == "catalyst-deploy/prune-report/2"
    assert not (out / "checkpoints").exists()  # a finished run removes its checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("method", ["catalyst", "catalyst-gated"])
def test_catalyst_cut_is_lossless_in_the_pipeline(tmp_path, method):
    cfg = api.load_config(model="zoo:small_resnet", out=str(tmp_path / "c"), method=method,
                          **{**FAST, "reg_epochs": 6})
    report = api.prune(cfg, log=lambda _m: None)
    acc = report.accuracy
    if method == "catalyst-gated":
        assert report.method["forced_to_zero"] == 0  # the prune set reached s = 0 by the dynamics
    # the paper's form cannot decide in 24 steps (its step cap binds) and forces part of its set to zero
    # (tests/test_catalyst.py P3 shows it deciding unforced on a longer schedule): the cut is lossless anyway
    assert acc["after_surgery"] == acc.get("after_decision", acc["after_regularization"])
    assert ("after_decision" in acc) == bool(report.method["forced_to_zero"] or report.method.get("revived"))
    assert (tmp_path / "c" / "bifurcation.png").stat().st_size > 1000


@pytest.mark.slow
def test_export_and_bench_time_the_exported_files(tmp_path):
    out = tmp_path / "deploy"
    cfg = api.load_config(model="zoo:tiny_cnn", out=str(out), export="onnx", bench=True, bench_batches="1",
                          latency_aware="ort-cpu", **{**FAST, "reg_epochs": 1})
    report = api.prune(cfg, log=lambda _m: None)
    assert report.exports["onnx"]["max_abs_diff"] <= report.exports["onnx"]["atol"]
    ratios = {c["backend"]: c["ratio"] for c in report.latency["cells"]}
    assert ratios["ort-cpu"] > 0
    bench = json.loads((out / "bench.json").read_text())
    assert {row["model"] for row in bench["rows"]} == {"baseline", "pruned"}
    assert "model.onnx" in bench["models"]["pruned"] and "dense.onnx" in bench["models"]["baseline"]
    assert "## Latency" in (out / "report.md").read_text()
    assert (out / "model.onnx").is_file() and (out / "latency.png").is_file()
    assert len(report.latency_aware["group_weight"]) > 0
    from catalyst_deploy.exporters.onnx import read_metadata

    meta = read_metadata(out / "model.onnx")
    assert meta["source_model"] == "zoo:tiny_cnn" and meta["method"] == "catalyst" and int(meta["macs"]) > 0


def test_unreachable_target_fails_before_training_and_leaves_nothing(tmp_path):
    cfg = api.load_config(model="zoo:small_resnet", out=str(tmp_path / "bad"), target_flops="0.001", **FAST)
    seen = []
    with pytest.raises(Exception, match=r"cannot be reached: the most these limits allow is 0\.0\d+ of the dense MACs"):
        api.prune(cfg, log=seen.append)
    assert not any(line.startswith("accuracy") for line in seen)  # nothing was trained or evaluated
    assert list(tmp_path.iterdir()) == []
