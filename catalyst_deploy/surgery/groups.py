"""How a `graph.ChannelGraph` finds its groups: torch-pruning's channel groups that are safe to cut, one
group of heads per attention module, and the groups whose trial cut breaks the model (left out, with the
reason in `graph.left_alone`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from catalyst_deploy.surgery.plan import apply_plan
from catalyst_deploy.surgery.shuffle_modules import ChannelShuffle, custom_pruners, opaque_shuffles
from catalyst_deploy.surgery.units import interleaved_unit

EMBEDDING = "embedding"  # the unit marker of an embedding-width group


def find_groups(graph, ignored: list[nn.Module], heads: list, prune_embedding: bool) -> tuple[list, list]:
    """torch-pruning's channel groups that are safe to cut, then one head group per attention module (its
    qkv, proj and per-head layers are kept out of the channel groups). Returns (groups, units): a unit is
    EMBEDDING for an embedding-width group (only with `prune_embedding`), the AttentionHeads of a head
    group, `units.Interleaved` for a group through grouped convolutions, else None."""
    import torch_pruning as tp

    attention_layers = [m for name in graph.left_alone if name in dict(graph.model.named_modules())
                        for m in graph.model.get_submodule(name).modules()]  # left-alone attention stays whole
    attention_layers += [graph.model.get_submodule(n) for h in heads for n in (h.qkv, *h.per_head_layers)]
    roots = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)
    groups = []
    groups, units = [], []
    cuttable_params = {p for p, _dim in graph.dg.unwrapped_parameters}
    for group in graph.dg.get_all_groups(ignored_layers=ignored + attention_layers, root_module_types=roots):
        reason = unprunable_reason(group, cuttable_params if prune_embedding else set())
        embedding, unit = is_embedding(group), interleaved_unit(group)  # unit: grouped convs (surgery/units.py)
        if reason is None and isinstance(unit, str):
            reason = unit
        if reason is None and embedding and not prune_embedding:
            reason = (f"the embedding width ({embedding}): left whole unless --prune-embedding")
        if reason is None:
            groups.append(group)
            units.append(EMBEDDING if embedding else unit)
        else:
            graph.left_alone.setdefault(graph.names.get(group[0].dep.target.module, "?"), reason)
    head_groups = [graph.dg.get_pruning_group(h.module.qkv, tp.prune_linear_out_channels,
                                             list(range(h.module.qkv.out_features))) for h in heads]
    return groups + head_groups, units + list(heads)


def is_embedding(group) -> str:
    """A description of what makes `group` a transformer's embedding width (LayerNorms, bare parameters
    such as a class token or position embedding), or '' when it is an ordinary channel group."""
    norms = sum(isinstance(dep.target.module, nn.LayerNorm) for dep, _ in group)
    params = sum(isinstance(dep.target.module, nn.Parameter) for dep, _ in group)
    if not norms and not params:
        return ""
    layers = len({dep.target.module for dep, _ in group if isinstance(dep.target.module, (nn.Linear, nn.Conv2d))})
    return f"{layers} layers, {norms} LayerNorms and {params} parameters coupled through residual adds"


def groups_that_break(graph) -> dict[int, str]:
    """{group: reason} for every group whose trial cut (one channel) makes the model fail on the example:
    all groups are cut at once first (one forward pass when nothing breaks), then halves of a failing set.
    A cut can break a forward pass that reads a width from somewhere the dependency graph cannot see
    (a reshape to a constant, an attribute)."""
    def breaks(gs: list[int]) -> str | None:
        mask = torch.zeros(graph.num_channels, dtype=torch.bool)
        mask[[graph.offsets[g] for g in gs]] = True
        try:
            with torch.no_grad():
                apply_plan(copy.deepcopy(graph._architecture), graph.plan_for(mask)).eval()(graph.example.cpu())
        except Exception as err:  # noqa: BLE001 - any failure of the cut model is a reason to leave it whole
            return f"a trial cut breaks the forward pass ({type(err).__name__}: {str(err).strip()[:120]})"
        return None

    def failing(gs: list[int]) -> dict[int, str]:
        reason = breaks(gs) if gs else None
        if reason is None:
            return {}
        if len(gs) == 1:
            return {gs[0]: reason}
        return {**failing(gs[:len(gs) // 2]), **failing(gs[len(gs) // 2:])}

    return failing(list(range(len(graph.groups))))


def unprunable_reason(group, cuttable_params: set) -> str | None:
    """Why a torch-pruning group cannot be cut safely, or None when it can; bare parameters can be cut only
    when they are in `cuttable_params` (torch-pruning's unwrapped parameters, with --prune-embedding)."""
    if len(group[0].idxs) < 2:
        return "a single channel"
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Parameter) and m in cuttable_params:
            continue
        if isinstance(m, nn.Parameter) or not isinstance(m, nn.Module):
            return ("the embedding width (coupled to a bare parameter: a class token, position embedding or layer "
                    "scale): left whole unless --prune-embedding")
        if isinstance(m, ChannelShuffle):
            return "crosses a ShuffleNet channel shuffle (it interleaves two branches' channels): left whole"
    return None


def head_cut(heads, idxs: list[int], removed: dict) -> dict:
    """Record in `removed` the rows and columns that removing heads `idxs` cuts; the attention entry."""
    removed.setdefault(heads.qkv, {}).setdefault("out", set()).update(heads.qkv_rows(idxs))
    removed.setdefault(heads.proj, {}).setdefault("in", set()).update(heads.proj_columns(idxs))
    for layer in heads.per_head_layers:
        removed.setdefault(layer, {}).setdefault("out", set()).update(idxs)
    keep = [h for h in range(heads.num_heads) if h not in set(idxs)]
    return {heads.name: {"type": type(heads.module).__name__, "num_heads": {"size": heads.num_heads, "keep": keep}}}


def param_cuts(graph, params: dict[str, set[int]]) -> dict[str, dict]:
    """{parameter name: {"dim", "size", "keep"}} for the bare parameters an embedding cut removes from."""
    dims = {graph.dg._param_to_name[p]: dim for p, dim in graph.dg.unwrapped_parameters}
    shapes = {n: p.shape for n, p in graph._architecture.named_parameters()}
    cuts = {}
    for name, idxs in sorted(params.items()):
        dim = dims[name] % len(shapes[name])
        cuts[name] = {"dim": dim, "size": shapes[name][dim],
                      "keep": [i for i in range(shapes[name][dim]) if i not in idxs]}
    return cuts


def build_dependency_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's DependencyGraph of `model` traced on `example` (eval mode, every parameter trainable)."""
    import warnings

    import torch_pruning as tp

    was_training = model.training
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # torch-pruning traces autograd: a frozen layer would vanish from the graph
        p.requires_grad_(True)
    try:
        model.eval()
        with warnings.catch_warnings():  # torch-pruning's note on bare parameters: left_alone says what matters
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            with opaque_shuffles():  # ShuffleNet's shuffle as one layer (surgery/shuffle_modules.py)
                return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                             customized_pruners=custom_pruners(model))
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)


def shape_only_copy(model: nn.Module, example: torch.Tensor):
    """A copy of `model` on the meta device (shapes, no data), or False when it does not count the same MACs
    as `model` on `example` (an op without a meta kernel, a count that reads values)."""
    from catalyst_deploy.surgery.macs import count_macs

    try:
        shapes = copy.deepcopy(model).to("meta")
        if count_macs(shapes, example.to("meta")) == count_macs(model, example):
            return shapes
    except Exception:  # noqa: BLE001 - any failure on meta means: count on real copies
        pass
    return False

