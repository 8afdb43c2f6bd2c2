"""Run settings: target parsing, recipes, overrides, validation."""

from __future__ import annotations

import pytest

from catalyst_deploy.config import PruneConfig, load_config, parse_int_tuple
from catalyst_deploy.targets import parse_flops_target
from catalyst_deploy.errors import UsageError


def test_flops_target_share_and_absolute():
    assert parse_flops_target("0.5").macs(1000) == 500
    assert parse_flops_target("2.0G").macs(10**10) == 2e9
    assert parse_flops_target("350M").absolute == 350e6


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "abc", "-0.2", "0G", ""])
def test_bad_flops_targets_are_usage_errors(bad):
    with pytest.raises(UsageError, match="--target-flops"):
        parse_flops_target(bad)


def test_shape_parsing():
    assert parse_int_tuple("1,3,224,224", "--input-shape", length=4) == (1, 3, 224, 224)
    with pytest.raises(UsageError):
        parse_int_tuple("3,224,224", "--input-shape", length=4)
    with pytest.raises(UsageError, match="N,C,H,W"):
        load_config("demo", input_shape="3,224,224")


def test_recipe_then_overrides():
    cfg = load_config("demo", out="x", reg_epochs=1, catalyst_gated={"c0": 1.2}, export="onnx", bench_batches="1,4")
    assert isinstance(cfg, PruneConfig)
    assert cfg.data == "demo"
    assert cfg.reg_epochs == 1 and cfg.catalyst_gated.c0 == 1.2
    assert cfg.catalyst_gated.check_every == 5  # untouched settings keep their defaults
    assert cfg.export.formats == ("onnx",) and cfg.bench.batches == (1, 4)


def test_unknown_settings_get_suggestions():
    with pytest.raises(UsageError, match="did you mean 'reg_epochs'"):
        load_config("demo", reg_epoch=1)
    with pytest.raises(UsageError, match="did you mean 'c0'"):
        load_config("demo", catalyst_gated={"c00": 2})
    with pytest.raises(UsageError, match="not found"):
        load_config("no-such-recipe")


@pytest.mark.parametrize("override, message", [
    (dict(lr="nan"), "finite"), (dict(lr=float("inf")), "finite"), (dict(lr=-0.1), "> 0"),
    (dict(batch_size="many"), "integer"), (dict(batch_size=2.5), "integer"), (dict(reg_epochs=True), "number"),
    (dict(max_layer_ratio=1.0), "< 1"), (dict(catalyst_gated={"c0": 0.9}), ">= 1"), (dict(catalyst={"deadline": 0}), "> 0"),
    (dict(catalyst={"placement": "conv"}), "one of"), (dict(catalyst={"c_hi": 1.0}), "> 1"),
    (dict(bench={"batches": "1,x"}), "integer"), (dict(export={"precision": "fp8"}), "one of"),
    (dict(catalyst="fast"), "mapping"),
])
def test_every_setting_is_validated_in_one_place(override, message):
    with pytest.raises(UsageError, match=message):
        load_config("demo", **override)


def test_a_recipe_can_set_export_and_bench_and_a_broken_one_is_one_line(tmp_path):
    good = tmp_path / "r.yaml"
    good.write_text("model: zoo:tiny_cnn\nexport:\n  formats: [onnx]\n  opset: 18\nbench:\n  enabled: true\n")
    cfg = load_config(str(good))
    assert cfg.export.formats == ("onnx",) and cfg.export.opset == 18 and cfg.bench.enabled
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(UsageError, match="not readable YAML"):
        load_config(str(broken))
    typed = tmp_path / "typed.yaml"
    typed.write_text("model: zoo:tiny_cnn\nlr: fast\n")
    with pytest.raises(UsageError, match="setting lr must be a number"):
        load_config(str(typed))


def test_config_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, catalyst_deploy.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
