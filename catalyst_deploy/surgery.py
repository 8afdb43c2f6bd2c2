"""Dependency-graph surgery: which channels can go, what removing them costs, and removing them.

The unit everywhere is a *channel group*: torch-pruning's `DependencyGraph` couples every layer slice
that must lose a channel together (a conv's filters, the BN after it, each consumer's input columns,
everything tied by residual adds or concatenation). Channels are numbered globally: channel `k` is
channel `k - offset[g]` of group `g`.

A *plan* records, per layer, which output/input indices survive, in the original model's numbering.
Applying a plan to a freshly built architecture reproduces the pruned model without any pickle:

    graph = ChannelGraph(model, example)
    result = prune_to_target(model, example, target=0.5)      # or graph.select(...) + apply_plan(...)
    rebuilt = apply_plan(build_architecture(), result.plan); rebuilt.load_state_dict(pruned_state)
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from catalyst_deploy.errors import CatalystDeployError, UsageError

PLAN_FORMAT = 1


@dataclass(frozen=True)
class ParamSlice:
    """The positions `pos` along `dim` of `param` that produce global channels `chan` (same length)."""

    param: nn.Parameter
    dim: int
    pos: torch.Tensor
    chan: torch.Tensor


@dataclass
class SurgeryResult:
    """What a cut did: the plan, the MACs/params before and after (torch-pruning's counter)."""

    plan: dict
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, params) of `model` on `example`, as counted by torch-pruning."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(model, example)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The last Conv/Linear executed in a forward pass: the classifier head, never pruned."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


class ChannelGraph:
    """The prunable channel groups of a model, their producer slices, and plans built from them.

    `ignore` names modules (as in `model.named_modules()`) whose channels stay whole; the output layer
    is always ignored. Groups that cannot be pruned safely (grouped non-depthwise convs, unwrapped
    parameters, a single channel) are left out.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, ignore: Sequence[str] = ()):
        import torch_pruning as tp

        self.model, self.example = model, example
        self.names = {m: n for n, m in model.named_modules()}
        ignored = self._resolve_ignored(ignore)
        was_training = model.training
        frozen = [p for p in model.parameters() if not p.requires_grad]
        for p in frozen:  # torch-pruning traces autograd: a frozen layer would vanish from the graph
            p.requires_grad_(True)
        try:
            model.eval()
            self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        finally:
            model.train(was_training)
            for p in frozen:
                p.requires_grad_(False)
        roots = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)
        self.groups = [g for g in self.dg.get_all_groups(ignored_layers=ignored, root_module_types=roots)
                       if self._prunable(g)]
        self.sizes = [len(g[0].idxs) for g in self.groups]
        offsets = [0]
        for s in self.sizes:
            offsets.append(offsets[-1] + s)
        self.offsets = offsets
        self.channel_weight: torch.Tensor | None = None  # optional per-channel multiplier of prune priority

    # ---- construction -------------------------------------------------------------------------
    def _resolve_ignored(self, ignore: Sequence[str]) -> list[nn.Module]:
        modules = dict(self.model.named_modules())
        missing = [n for n in ignore if n not in modules]
        if missing:
            from catalyst_deploy.errors import did_you_mean

            raise UsageError(f"--ignore {missing[0]!r} is not a module of the model{did_you_mean(missing[0], modules)}")
        ignored = [sub for n in ignore for sub in modules[n].modules()]  # a block name covers its layers
        head = output_layer(self.model, self.example)
        return ignored + ([head] if head is not None else [])

    def _prunable(self, group) -> bool:
        if len(group[0].idxs) < 2:
            return False
        for dep, _ in group:
            m = dep.target.module
            if isinstance(m, nn.Parameter) or not isinstance(m, nn.Module):
                return False
            if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.in_channels:
                return False  # grouped (not depthwise) conv: channel counts must stay divisible
        return True

    @property
    def num_channels(self) -> int:
        return self.offsets[-1]

    def root_name(self, g: int) -> str:
        return self.names.get(self.groups[g][0].dep.target.module, "?")

    # ---- producer slices (what the regularizer acts on) ----------------------------------------
    def producer_slices(self, skip_normalized: bool = False) -> list[ParamSlice]:
        """Every parameter slice that *produces* a channel: conv/linear output rows, biases, norm scale/shift.

        Consumers' input columns are left out on purpose, so that no parameter entry belongs to two
        channels: a channel whose producer slices are all zero outputs exactly zero (for activations
        with f(0) = 0), and a per-channel proximal step is then exact (DESIGN.md §2.2, property P1).

        `skip_normalized` also leaves out the rows of convs/linears whose output goes only into a
        BatchNorm: the BN makes them scale-invariant (their norm says nothing about the function, and
        SGD grows small ones fast), while BN scale and shift at zero already silence the channel.
        """
        skip = self._normalized_producers() if skip_normalized else set()
        owner: dict[tuple[int, int], tuple[nn.Parameter, int, dict[int, int]]] = {}
        for g, group in enumerate(self.groups):
            for item in group:
                dep = item.dep
                if not self.dg.is_out_channel_pruning_fn(dep.handler) or dep.target.module in skip:
                    continue
                for param, dim in _output_params(dep.target.module):
                    key = (id(param), dim)
                    entry = owner.setdefault(key, (param, dim, {}))
                    for pos, root in zip(item.idxs, item.root_idxs):
                        entry[2].setdefault(int(pos), self.offsets[g] + int(root))
        slices = []
        for param, dim, mapping in owner.values():
            pos = torch.tensor(sorted(mapping), dtype=torch.long, device=param.device)
            chan = torch.tensor([mapping[p] for p in sorted(mapping)], dtype=torch.long, device=param.device)
            slices.append(ParamSlice(param, dim, pos, chan))
        return slices

    def _normalized_producers(self) -> set[nn.Module]:
        """Convs/linears whose every consumer is a BatchNorm."""
        found = set()
        for module, node in self.dg.module2node.items():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and node.outputs and all(
                    isinstance(out.module, nn.modules.batchnorm._BatchNorm) for out in node.outputs):
                found.add(module)
        return found

    # ---- selections and plans ------------------------------------------------------------------
    def limit(self, chosen: torch.Tensor, priority: torch.Tensor, round_to: int | None, max_ratio: float) -> torch.Tensor:
        """Trim a boolean prune mask so each group keeps >= (1 - max_ratio) of its channels, at least one
        `round_to` block, and a multiple of `round_to` channels (dropping the lowest-priority picks)."""
        out = torch.zeros_like(chosen)
        for g, size in enumerate(self.sizes):
            lo, hi = self.offsets[g], self.offsets[g + 1]
            picked = chosen[lo:hi].nonzero().flatten()
            allowed = _allowed_prune_count(size, len(picked), round_to, max_ratio)
            if allowed <= 0:
                continue
            best = picked[priority[lo:hi][picked].argsort(descending=True)[:allowed]]
            out[lo + best] = True
        return out

    def plan_for(self, mask: torch.Tensor) -> dict:
        """The layer plan that removes the channels set in the global boolean `mask`."""
        removed: dict[str, dict[str, set[int]]] = {}
        removed_channels: dict[str, list[int]] = {}
        for g, group in enumerate(self.groups):
            idxs = mask[self.offsets[g]:self.offsets[g + 1]].nonzero().flatten().tolist()
            if not idxs:
                continue
            removed_channels[self.root_name(g)] = idxs
            root = group[0].dep
            for item in self.dg.get_pruning_group(root.target.module, root.handler, idxs):
                module = item.dep.target.module
                if module not in self.names or _pruner_for(module) is None:
                    continue  # index-only nodes (add, concat, flatten) have nothing to cut
                kind = "out" if self.dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
                removed.setdefault(self.names[module], {}).setdefault(kind, set()).update(int(i) for i in item.idxs)
        return _plan_from_removed(self.model, removed, removed_channels)

    def trial_macs(self, mask: torch.Tensor) -> int:
        """MACs of the model with the channels in `mask` removed, measured by cutting a copy."""
        trial = apply_plan(copy.deepcopy(self.model), self.plan_for(mask))
        return count_macs(trial, self.example)[0]

    def select_to_target(self, priority: torch.Tensor, target_macs: float, round_to: int | None = 8,
                         max_ratio: float = 0.9, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """The smallest prefix of channels in descending `priority` (restricted to `candidates`) whose
        removal, after per-group limits and rounding, brings the measured MACs to <= `target_macs`.

        Raises CatalystDeployError when even the largest allowed cut stays above the target.
        """
        if self.channel_weight is not None:
            priority = self.latency_weighted(priority)
        order = priority.argsort(descending=True)
        if candidates is not None:
            order = order[candidates[order]]

        def mask_of(k: int) -> torch.Tensor:
            m = torch.zeros(self.num_channels, dtype=torch.bool)
            m[order[:k]] = True
            return self.limit(m, priority, round_to, max_ratio)

        lo, hi = 0, len(order)
        if self.trial_macs(mask_of(hi)) > target_macs:
            raise CatalystDeployError(
                f"the FLOPs target ({target_macs / 1e6:.1f}M MACs) cannot be reached with at most "
                f"{max_ratio:.0%} of each layer's channels removed: raise --max-layer-ratio or the target"
            )
        while lo < hi:  # smallest k with trial_macs(k) <= target
            mid = (lo + hi) // 2
            if self.trial_macs(mask_of(mid)) <= target_macs:
                hi = mid
            else:
                lo = mid + 1
        mask = self._fill_budget(mask_of, lo, target_macs, round_to)
        return self._restore_blocks(mask, priority, target_macs, round_to)

    def _restore_blocks(self, mask: torch.Tensor, priority: torch.Tensor, target_macs: float,
                        round_to: int | None) -> torch.Tensor:
        """One greedy pass: give each group back one `round_to` block of its lowest-priority pruned
        channels while the measured MACs stay within the target (lands closer to the target)."""
        block = max(1, round_to or 1)
        close_enough = 0.995 * target_macs  # within half a percent: not worth more trial cuts
        if self.trial_macs(mask) >= close_enough:
            return mask
        pruned_groups = [g for g in range(len(self.sizes)) if mask[self.offsets[g]:self.offsets[g + 1]].any()]
        for g in sorted(pruned_groups, key=lambda g: self.sizes[g]):
            lo, hi = self.offsets[g], self.offsets[g + 1]
            picked = mask[lo:hi].nonzero().flatten()
            if len(picked) < block:
                continue
            give_back = picked[priority[lo:hi][picked].argsort()[:block]]
            trial = mask.clone()
            trial[lo + give_back] = False
            macs = self.trial_macs(trial)
            if macs <= target_macs:
                mask = trial
                if macs >= close_enough:
                    break
        return mask

    def latency_weighted(self, priority: torch.Tensor) -> torch.Tensor:
        """Latency-aware priority: rank within each group spread over (0, 1], times the group's weight
        (bench.layer_latency: measured ms per MAC relative to the median, to the power alpha). Which
        channels go within a layer follows the method; how many per layer follows measured latency."""
        sizes = torch.repeat_interleave(torch.tensor(self.sizes), torch.tensor(self.sizes)).float()
        return (self.group_ranks(priority) + 1) / sizes * self.channel_weight

    def group_ranks(self, priority: torch.Tensor) -> torch.Tensor:
        """Each channel's rank by `priority` within its own group: 0 for the group's lowest, size - 1 for
        its highest (float, one per global channel)."""
        return torch.cat([part.argsort().argsort().float() for part in priority.split(self.sizes)])

    def _fill_budget(self, mask_of, k: int, target_macs: float, round_to: int | None, tries: int = 8) -> torch.Tensor:
        """Rounding makes MACs(k) step unevenly, so a slightly shorter prefix can also meet the target
        with more MACs left: try a few and keep the feasible cut closest to the target."""
        best, best_macs = mask_of(k), self.trial_macs(mask_of(k))
        step = max(1, round_to or 1)
        for j in range(1, tries + 1):
            if k - j * step < 0:
                break
            mask = mask_of(k - j * step)
            macs = self.trial_macs(mask)
            if best_macs < macs <= target_macs:
                best, best_macs = mask, macs
        return best


# ---- plans: build, apply, save, load -------------------------------------------------------------
def _output_params(module: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """(parameter, channel dim) pairs that produce `module`'s output channels."""
    params = []
    if isinstance(module, nn.modules.conv._ConvNd):
        params.append((module.weight, 1 if module.transposed else 0))
    elif isinstance(module, (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.PReLU)):
        if getattr(module, "weight", None) is not None:
            params.append((module.weight, 0))
    else:
        return []
    if getattr(module, "bias", None) is not None:
        params.append((module.bias, 0))
    return [(p, d) for p, d in params if isinstance(p, nn.Parameter) and p.dim() > d]


def _pruner_for(module: nn.Module):
    import torch_pruning as tp

    return tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))


def _allowed_prune_count(size: int, wanted: int, round_to: int | None, max_ratio: float) -> int:
    keep_min = max(1, math.ceil(size * (1.0 - max_ratio)), min(round_to or 1, size))
    prune = min(wanted, size - keep_min)
    if round_to and round_to > 1 and size > round_to:
        keep = size - prune
        keep = min(size, math.ceil(keep / round_to) * round_to)
        prune = size - keep
    return max(0, prune)


def _plan_from_removed(model: nn.Module, removed: dict, removed_channels: dict) -> dict:
    layers = {}
    for name, kinds in sorted(removed.items()):
        module = model.get_submodule(name)
        pruner = _pruner_for(module)
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
        pruner = _pruner_for(module)
        depthwise = tp.ops.module2type(module) == tp.ops.OPTYPE.DEPTHWISE_CONV
        cuts = {}
        for kind in ("out", "in"):
            if kind not in entry:
                continue
            size = pruner.get_out_channels(module) if kind == "out" else pruner.get_in_channels(module)
            if size != entry[kind]["size"]:
                raise UsageError(f"plan expects {name} to have {entry[kind]['size']} {kind} channels, it has {size}")
            keep = set(entry[kind]["keep"])
            cuts[kind] = [i for i in range(size) if i not in keep]
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


def save_plan(plan: dict, path: str | Path) -> None:
    """Write plan.json atomically."""
    from catalyst_deploy.atomic import write_text

    write_text(path, json.dumps(plan, indent=1))


def load_plan(path: str | Path) -> dict:
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


def prune_to_target(model: nn.Module, example: torch.Tensor, target: float, scores: torch.Tensor | None = None,
                    round_to: int | None = 8, ignore: Sequence[str] = (), max_ratio: float = 0.9,
                    graph: ChannelGraph | None = None) -> SurgeryResult:
    """Cut `model` in place to at most `target` x its MACs (or `target` MACs when `target` > 1).

    `scores` is one prune priority per channel of the ChannelGraph (higher goes first); None ranks by
    the L2 norm of each channel's producer slices (small first).
    """
    graph = graph or ChannelGraph(model, example, ignore)
    macs0, params0 = count_macs(model, example)
    target_macs = target * macs0 if target <= 1 else target
    if scores is None:
        scores = -channel_norms(graph.producer_slices(), graph.num_channels)
    mask = graph.select_to_target(scores.detach().cpu(), target_macs, round_to, max_ratio)
    plan = graph.plan_for(mask)
    apply_plan(model, plan)
    macs1, params1 = count_macs(model, example)
    plan.update(macs_before=macs0, macs_after=macs1, params_before=params0, params_after=params1)
    return SurgeryResult(plan, macs0, macs1, params0, params1)


def channel_norms(slices: Sequence[ParamSlice], num_channels: int) -> torch.Tensor:
    """L2 norm of every channel's producer slices (one fused pass over the parameters)."""
    device = slices[0].param.device if slices else torch.device("cpu")
    sq = torch.zeros(num_channels, device=device, dtype=torch.float32)
    with torch.no_grad():
        for s in slices:
            other = [d for d in range(s.param.dim()) if d != s.dim]
            per_pos = s.param.detach().float().pow(2).sum(dim=other) if other else s.param.detach().float().pow(2)
            sq.index_add_(0, s.chan, per_pos[s.pos])
    return sq.sqrt().cpu()
