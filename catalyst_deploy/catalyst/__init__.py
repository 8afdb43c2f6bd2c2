"""Pruning methods: the Catalyst regularizer and the baselines, one interface, one registry.

    method = make_method("catalyst", seed=0)
"""

from __future__ import annotations

from catalyst_deploy.catalyst.base import PruningMethod
from catalyst_deploy.catalyst.baselines import GroupLasso, L1Ranking, NetworkSlimming, RandomRanking, TaylorRanking
from catalyst_deploy.catalyst.controller import CatalystSettings, TargetController
from catalyst_deploy.catalyst.regularizer import CatalystRegularizer
from catalyst_deploy.errors import UsageError, did_you_mean

METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (CatalystRegularizer, L1Ranking, GroupLasso, NetworkSlimming, TaylorRanking, RandomRanking)
}

# Baseline penalty strengths: the values their papers / torch-pruning use by default, not tuned here.
BASELINE_REG = {"group-lasso": 1e-4, "slimming": 1e-4}


def make_method(name: str, *, seed: int = 0, catalyst: CatalystSettings | None = None) -> PruningMethod:
    """Instantiate a pruning method by name; UsageError (with a suggestion) for an unknown name."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}{did_you_mean(name, METHODS)}; choose from {', '.join(METHODS)}")
    if name == "catalyst":
        return CatalystRegularizer(c0=(catalyst or CatalystSettings()).c0)
    if name == "random":
        return RandomRanking(seed=seed)
    if name in BASELINE_REG:
        return METHODS[name](reg=BASELINE_REG[name])
    return METHODS[name]()


__all__ = ["METHODS", "PruningMethod", "CatalystRegularizer", "CatalystSettings", "TargetController", "make_method"]
