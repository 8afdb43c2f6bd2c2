"""The table of pruning methods: each row names a method, says what it is (the CLI help is generated from
these) and points at its class in `catalyst_deploy.methods` as "module:Class", imported only when a run uses
it, so that `--help` and the settings layer never load torch.

    get_method("catalyst").regularized      # True: it has a penalty of its own

Adding a method: a class implementing `methods.base.PruningMethod` (with `from_config`) and a row here; see
docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalyst_deploy.errors import UsageError, did_you_mean


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    entry: str  # "module:Class"
    regularized: bool  # has a penalty of its own (its strength is a setting); False: plain fine-tuning


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("catalyst", "Catalyst as the paper defines it: a catalyst delta per channel in the forward pass, every "
               "channel starting at c = delta/||F|| = 1, the penalty delta*||F|| on the filters themselves; lossless "
               "cuts", "catalyst_deploy.methods.catalyst:CatalystRegularizer", True),
    MethodSpec("catalyst-gated", "this project's earlier Catalyst: product penalty d*|s| on a function-preserving "
               "gate per channel; lossless cuts", "catalyst_deploy.methods.catalyst_gated:GatedCatalyst", True),
    MethodSpec("l1", "one-shot filter-norm (L1) ranking, Li et al. 2017",
               "catalyst_deploy.methods.baselines:L1Ranking", False),
    MethodSpec("group-lasso", "group-norm sparsity penalty (torch-pruning GroupNormPruner), then L2 group ranking",
               "catalyst_deploy.methods.baselines:GroupLasso", True),
    MethodSpec("depgraph", "DepGraph as torch-pruning ships it: GroupNormPruner sparsity training (no weight decay), "
               "then its own progressive global ranking (Fang et al. 2023)",
               "catalyst_deploy.methods.depgraph:DepGraphPruner", True),
    MethodSpec("slimming", "L1 on BN scales (Liu et al. 2017, torch-pruning BNScalePruner), then BN-scale ranking",
               "catalyst_deploy.methods.baselines:NetworkSlimming", True),
    MethodSpec("taylor", "first-order Taylor importance accumulated during fine-tuning (Molchanov et al. 2019)",
               "catalyst_deploy.methods.baselines:TaylorRanking", False),
    MethodSpec("random", "random channels (a floor every method must beat)",
               "catalyst_deploy.methods.baselines:RandomRanking", False),
)}


def get_method(name: str) -> MethodSpec:
    """The table row for `name`; UsageError with the closest name when there is none."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}{did_you_mean(name, METHODS)}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_help() -> str:
    """One entry per method for `--help`."""
    return "; ".join(f"{spec.name}: {spec.summary}" for spec in METHODS.values())


# `--method catalyst` with the paper's formulation read literally (its `catalyst:` recipe section), the defaults
# until the rewind setting measured better (docs/method.md, "Which form is the default"): the split made by the
# dynamics alone. Benchmarks whose records were made with those defaults and the property tests P1-P4 pin them.
LITERAL = {"bypass": "none", "pressure": 0.02, "strength": 4.0, "deadline": 0.8, "window_epochs": 0.0,
           "cost_aware": True, "center": False, "center_groups": False, "rewind": False}
