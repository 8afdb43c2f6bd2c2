"""Surgery plans: which output/input indices of each layer survive, in the original model's numbering.

A plan (plan.json) rebuilds a pruned model from its architecture and state dict without any pickle:

    rebuilt = rebuild_pruned(small_resnet(), load_plan("runs/r/plan.json"), torch.load(state, weights_only=True))

The cuts themselves are torch-pruning's layer pruners (`PrunerBox`), the same ones its DependencyGraph
uses, so a plan cuts convs, BNs, linears, depthwise convs and norms exactly as torch-pruning would.

Format 2 adds what a transformer needs: `convert` names the torchvision attention modules swapped for
their head-prunable stand-ins (`attention_modules`), `attention` the heads each attention module keeps
(`{"num_heads": {"size": 12, "keep": [0, 2, ...]}}`), so the rebuilt modules read the right head count,
and `params` the kept positions of bare parameters (a class token, a position embedding) when the
embedding width is cut. A plan without any of them is written as format 1, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from catalyst_deploy.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

PLAN_FORMAT = 2
READABLE_FORMATS = (1, 2)


def layer_pruner(module: nn.Module):
    """torch-pruning's pruner for `module`'s type, or None for index-only nodes (add, concat, flatten)."""
    import torch_pruning as tp

    return tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))


def make_plan(model: nn.Module, removed: dict[str, dict[str, set[int]]], removed_channels: dict[str, list[int]],
              attention: dict | None = None, converted: dict[str, str] | None = None,
              params: dict | None = None) -> dict:
    """A plan from the indices removed per layer name and kind ("out"/"in"); `removed_channels` names each
    pruned group by its root layer (for people reading plan.json); `attention` the heads each attention
    module keeps, `converted` the attention modules swapped for stand-ins, `params` the bare parameters'
    kept positions (all three format 2)."""
    layers = {}
    for name, kinds in sorted(removed.items()):
        module = model.get_submodule(name)
        pruner = layer_pruner(module)
        entry = {"type": type(module).__name__}
        for kind, idxs in kinds.items():
            size = pruner.get_out_channels(module) if kind == "out" else pruner.get_in_channels(module)
            entry[kind] = {"size": int(size), "keep": [i for i in range(size) if i not in idxs]}
        layers[name] = entry
    if not attention and not converted and not params:
        return {"format": 1, "layers": layers, "removed_channels": removed_channels}
    return {"format": PLAN_FORMAT, "convert": dict(converted or {}), "layers": layers,
            "attention": dict(sorted((attention or {}).items())), "params": dict(params or {}),
            "removed_channels": removed_channels}


def apply_plan(model: nn.Module, plan: dict) -> nn.Module:
    """Cut `model` in place to the plan's kept indices and return it.

    Raises UsageError when the plan does not fit the model (unknown layer, wrong original size).
    """
    import torch_pruning as tp

    from catalyst_deploy.surgery.attention import set_kept_heads, sync_embedding_width
    from catalyst_deploy.surgery.attention_modules import convert_named

    if plan.get("format") not in READABLE_FORMATS:
        raise UsageError(f"plan format {plan.get('format')!r} is not supported (expected one of {READABLE_FORMATS})")
    convert_named(model, plan.get("convert", {}))
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
    for name, entry in plan.get("attention", {}).items():
        module = model.get_submodule(name)
        if module.num_heads != entry["num_heads"]["size"]:
            raise UsageError(f"plan expects {name} to have {entry['num_heads']['size']} heads, it has {module.num_heads}")
        set_kept_heads(module, entry["num_heads"]["keep"])
    for name, entry in plan.get("params", {}).items():
        _cut_parameter(model, name, entry)
    sync_embedding_width(model)
    return model


def _cut_parameter(model: nn.Module, name: str, entry: dict) -> None:
    """Keep `entry["keep"]` along `entry["dim"]` of the bare parameter `name` (a class token, a position
    embedding, a layer scale)."""
    import torch
    from torch import nn

    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    param = getattr(owner, attr, None)
    if not isinstance(param, nn.Parameter) or param.shape[entry["dim"]] != entry["size"]:
        raise UsageError(f"plan expects parameter {name} with {entry['size']} entries along dim {entry['dim']}: "
                         "wrong architecture?")
    index = torch.tensor(entry["keep"], dtype=torch.long, device=param.device)
    setattr(owner, attr, nn.Parameter(param.data.index_select(entry["dim"], index).clone(),
                                      requires_grad=param.requires_grad))


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
