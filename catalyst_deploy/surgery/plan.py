"""Surgery plans: which output/input indices of each layer survive, in the original model's numbering.

A plan (plan.json) rebuilds a pruned model from its architecture and state dict without any pickle:

    rebuilt = rebuild_pruned(small_resnet(), load_plan("runs/r/plan.json"), torch.load(state, weights_only=True))

The cuts themselves are torch-pruning's layer pruners (`PrunerBox`), the same ones its DependencyGraph
uses, so a plan cuts convs, BNs, linears, depthwise convs and norms exactly as torch-pruning would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from catalyst_deploy.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

PLAN_FORMAT = 1


def layer_pruner(module: nn.Module):
    """torch-pruning's pruner for `module`'s type, or None for index-only nodes (add, concat, flatten)."""
    import torch_pruning as tp

    return tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))


def make_plan(model: nn.Module, removed: dict[str, dict[str, set[int]]], removed_channels: dict[str, list[int]]) -> dict:
    """A plan from the indices removed per layer name and kind ("out"/"in"); `removed_channels` names each
    pruned group by its root layer (for people reading plan.json)."""
    layers = {}
    for name, kinds in sorted(removed.items()):
        module = model.get_submodule(name)
        pruner = layer_pruner(module)
        entry = {"type": type(module).__name__}
        for kind, idxs in kinds.items():
            size = pruner.get_out_channels(module) if kind == "out" else pruner.get_in_channels(module)
            entry[kind] = {"size": int(size), "keep": [i for i in range(size) if i not in idxs]}
        layers[name] = entry
    return {"format": PLAN_FORMAT, "layers": layers, "removed_channels": removed_channels}


def apply_plan(model: nn.Module, plan: dict) -> nn.Module:
    """Cut `model` in place to the plan's kept indices and return it.

    Raises UsageError when the plan does not fit the model (unknown layer, wrong original size).
    """
    import torch_pruning as tp

    check_plan(plan)
    for name, entry in plan["layers"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UsageError(f"plan names layer {name[:80]!r}, which this model does not have: wrong architecture?") from None
        pruner = layer_pruner(module)
        if pruner is None:
            raise UsageError(f"plan cuts layer {name[:80]!r}, a {type(module).__name__}, which has no channels to cut")
        cuts = {kind: _removed(name, module, pruner, kind, entry[kind]) for kind in ("out", "in") if kind in entry}
        depthwise = tp.ops.module2type(module) == tp.ops.OPTYPE.DEPTHWISE_CONV
        if depthwise or pruner.prune_in_channels == pruner.prune_out_channels:
            union = sorted(set(cuts.get("out", [])) | set(cuts.get("in", [])))
            if union:
                pruner.prune_out_channels(module, union)
            continue
        if cuts.get("out"):
            pruner.prune_out_channels(module, cuts["out"])
        if cuts.get("in"):
            pruner.prune_in_channels(module, cuts["in"])
    return model


def check_plan(plan) -> None:
    """UsageError unless `plan` has the shape `make_plan` writes: format, and per layer name the original
    size and the sorted kept indices of its "out" and/or "in" channels (a plan is read from files)."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise UsageError(f"plan format {str(found)[:40]!r} is not supported (expected {PLAN_FORMAT})")
    layers = plan.get("layers")
    if not isinstance(layers, dict):
        raise UsageError("plan has no 'layers' mapping of layer name to kept channels")
    for name, entry in layers.items():
        if not isinstance(entry, dict) or not ({"out", "in"} & set(entry)):
            raise UsageError(f"plan entry of layer {str(name)[:80]!r} must give 'out' and/or 'in' channels")
        for kind in ("out", "in"):
            if kind in entry and not _kept_indices_ok(entry[kind]):
                raise UsageError(f"plan entry {str(name)[:80]!r} {kind}: needs 'size' (a positive integer) and 'keep' "
                                 "(sorted distinct indices below size, at least one)")


def _kept_indices_ok(cut) -> bool:
    if not isinstance(cut, dict):
        return False
    size, keep = cut.get("size"), cut.get("keep")
    ints = isinstance(keep, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in keep)
    return (isinstance(size, int) and not isinstance(size, bool) and size > 0 and ints and len(keep) > 0
            and keep == sorted(set(keep)) and keep[0] >= 0 and keep[-1] < size)


def _removed(name: str, module, pruner, kind: str, entry: dict) -> list[int]:
    size = pruner.get_out_channels(module) if kind == "out" else pruner.get_in_channels(module)
    if size != entry["size"]:
        raise UsageError(f"plan expects {name} to have {entry['size']} {kind} channels, it has {size}")
    keep = set(entry["keep"])
    return [i for i in range(size) if i not in keep]


def save_plan(plan: dict, path: str | Path) -> None:
    """Write plan.json atomically."""
    from catalyst_deploy.atomic import write_text

    write_text(path, json.dumps(plan, indent=1))


def load_plan(path: str | Path) -> dict:
    """A plan read from plan.json; UsageError when the file is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"plan file not found: {path}") from None
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested too deep to read
        raise UsageError(f"plan file {path} is not valid JSON: {str(err)[:200]}") from None


def rebuild_pruned(architecture: nn.Module, plan: dict, state_dict: dict) -> nn.Module:
    """Architecture (freshly built, dense) + plan + pruned state dict -> the pruned model, no pickle.

    Raises UsageError when the plan is malformed or does not fit the architecture, or when the state dict
    does not fit the cut model."""
    model = apply_plan(architecture, plan)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UsageError(f"the state dict does not fit the model the plan cuts: {first}") from None
    return model
