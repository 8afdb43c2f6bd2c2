"""Run settings: target parsing, recipes, overrides, validation."""

from __future__ import annotations

import pytest

from catalyst_deploy.config import PruneConfig, load_config, parse_flops_target, parse_shape
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
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    with pytest.raises(UsageError):
        parse_shape("3,224,224")


def test_recipe_then_overrides():
    cfg = load_config("demo", out="x", reg_epochs=1, catalyst={"c_hi": 2.0})
    assert isinstance(cfg, PruneConfig)
    assert cfg.model == "zoo:small_resnet" and cfg.data == "demo"
    assert cfg.reg_epochs == 1 and cfg.catalyst.c_hi == 2.0
    assert cfg.catalyst.check_every == 5  # untouched settings keep their defaults


def test_unknown_settings_get_suggestions():
    with pytest.raises(UsageError, match="did you mean 'reg_epochs'"):
        load_config("demo", reg_epoch=1)
    with pytest.raises(UsageError, match="did you mean 'c_hi'"):
        load_config("demo", catalyst={"c_high": 2})
    with pytest.raises(UsageError, match="not found"):
        load_config("no-such-recipe")
