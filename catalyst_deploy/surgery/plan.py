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

    check_plan(plan, empty_ok=True)  # a trial cut may take a whole layer; a plan read from a file may not
    convert_named(model, plan.get("convert", {}))
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
    for name, entry in plan.get("attention", {}).items():
        module = model.get_submodule(name)
        if module.num_heads != entry["num_heads"]["size"]:
            raise UsageError(f"plan expects {name} to have {entry['num_heads']['size']} heads, it has {module.num_heads}")
        set_kept_heads(module, entry["num_heads"]["keep"])
    for name, entry in plan.get("params", {}).items():
        _cut_parameter(model, name, entry)
    sync_embedding_width(model)
    return model


def check_plan(plan, empty_ok: bool = False) -> None:
    """UsageError unless `plan` has the shape `make_plan` writes: format, and per layer name the original
    size and the sorted kept indices of its "out" and/or "in" channels, at least one unless `empty_ok`
    (a plan is read from files)."""
    if not isinstance(plan, dict) or plan.get("format") not in READABLE_FORMATS:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise UsageError(f"plan format {str(found)[:40]!r} is not supported (expected one of {READABLE_FORMATS})")
    layers = plan.get("layers")
    if not isinstance(layers, dict):
        raise UsageError("plan has no 'layers' mapping of layer name to kept channels")
    for name, entry in layers.items():
        if not isinstance(entry, dict) or not ({"out", "in"} & set(entry)):
            raise UsageError(f"plan entry of layer {str(name)[:80]!r} must give 'out' and/or 'in' channels")
        for kind in ("out", "in"):
            if kind in entry and not _kept_indices_ok(entry[kind], empty_ok):
                raise UsageError(f"plan entry {str(name)[:80]!r} {kind}: needs 'size' (a positive integer) and 'keep' "
                                 "(sorted distinct indices below size, at least one)")
    _check_format_2(plan)


def _check_format_2(plan: dict) -> None:
    """The transformer parts of a format-2 plan: known stand-ins only, heads and bare parameters as kept indices."""
    from catalyst_deploy.surgery.attention_modules import STAND_INS

    convert, attention, params = plan.get("convert", {}), plan.get("attention", {}), plan.get("params", {})
    if not all(isinstance(part, dict) for part in (convert, attention, params)):
        raise UsageError("plan's 'convert', 'attention' and 'params' must be mappings")
    for name, kind in convert.items():
        if kind not in STAND_INS:
            raise UsageError(f"plan converts {str(name)[:80]!r} to {str(kind)[:40]!r}; known: {', '.join(STAND_INS)}")
    for name, entry in attention.items():
        if not (isinstance(entry, dict) and _kept_indices_ok(entry.get("num_heads"))):
            raise UsageError(f"plan's heads of {str(name)[:80]!r} need num_heads with 'size' and 'keep'")
    for name, entry in params.items():
        dim = entry.get("dim") if isinstance(entry, dict) else None
        if not (isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim < 8 and _kept_indices_ok(entry)):
            raise UsageError(f"plan's parameter {str(name)[:80]!r} needs 'dim', 'size' and 'keep'")


def _kept_indices_ok(cut, empty_ok: bool = False) -> bool:
    if not isinstance(cut, dict):
        return False
    size, keep = cut.get("size"), cut.get("keep")
    ints = isinstance(keep, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in keep)
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0 and ints):
        return False
    return (not keep and empty_ok) or (len(keep) > 0 and keep == sorted(set(keep)) and keep[0] >= 0 and keep[-1] < size)


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
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested too deep to read
        raise UsageError(f"plan file {path} is not valid JSON: {str(err)[:200]}") from None


def rebuild_pruned(architecture: nn.Module, plan: dict, state_dict: dict) -> nn.Module:
    """Architecture (freshly built, dense) + plan + pruned state dict -> the pruned model, no pickle.

    Raises UsageError when the plan is malformed or does not fit the architecture, or when the state dict
    does not fit the cut model."""
    check_plan(plan)
    model = apply_plan(architecture, plan)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UsageError(f"the state dict does not fit the model the plan cuts: {first}") from None
    return model
