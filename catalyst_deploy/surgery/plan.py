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

    if plan.get("format") != PLAN_FORMAT:
        raise UsageError(f"plan format {plan.get('format')!r} is not supported (expected {PLAN_FORMAT})")
    for name, entry in plan["layers"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UsageError(f"plan names layer {name!r}, which this model does not have: wrong architecture?") from None
        pruner = layer_pruner(module)
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
    except json.JSONDecodeError as err:
        raise UsageError(f"plan file {path} is not valid JSON: {err}") from None


def rebuild_pruned(architecture: nn.Module, plan: dict, state_dict: dict) -> nn.Module:
    """Architecture (freshly built, dense) + plan + pruned state dict -> the pruned model, no pickle."""
    model = apply_plan(architecture, plan)
    model.load_state_dict(state_dict)
    return model
