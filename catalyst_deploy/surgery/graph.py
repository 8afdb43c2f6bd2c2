"""The prunable channel groups of a model (torch-pruning's DependencyGraph), their producer slices, and
the plans and trial cuts built from them.

The unit everywhere is a *channel group*: the DependencyGraph couples every layer slice that must lose a
channel together (a conv's filters, the BN after it, each consumer's input columns, everything tied by
residual adds or concatenation). Channels are numbered globally: channel `k` is channel `k - offsets[g]`
of group `g`. What to prune is decided elsewhere (`allocation`, `methods`); this module only knows the
structure.

    graph = ChannelGraph(model, example)
    plan = graph.plan_for(mask)          # mask: one bool per global channel
    graph.trial_macs(mask)               # MACs with those channels removed, measured on a cut copy

A group's channels are usually single channels; in an attention module they are whole heads
(`attention`): global channel `k` of a head group is one head (its q, k and v rows and its `proj`
columns), so every method scores, gates and cuts heads as it does channels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from collections.abc import Sequence

import torch
from torch import nn

from catalyst_deploy.errors import CatalystDeployError, UsageError, did_you_mean
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.surgery.groups import build_dependency_graph, head_cut, param_cuts, shape_only_copy
from catalyst_deploy.surgery.hooks import eval_forward_with_hooks
from catalyst_deploy.surgery.units import group_size, is_heads, positions_of, unit_kind, unit_positions, unit_width
from catalyst_deploy.surgery.plan import apply_plan, layer_pruner, make_plan


@dataclass(frozen=True)
class ParamSlice:
    """The positions `pos` along `dim` of `param` that produce global channels `chan` (same length)."""

    param: nn.Parameter
    dim: int
    pos: torch.Tensor
    chan: torch.Tensor


def output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The last Conv/Linear executed in a forward pass: the classifier head, never pruned."""
    order: list[nn.Module] = []
    eval_forward_with_hooks(model, example, [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
                                             for m in model.modules()
                                             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))])
    return order[-1] if order else None


class ChannelGraph:
    """The prunable channel groups of `model` on `example`.

    torchvision attention modules are first swapped, in place, for head-prunable equivalents
    (`attention_modules.convert_attention`: same outputs; `converted` names them). `ignore` names modules
    (as in `model.named_modules()`) whose channels stay whole; the output layer is always ignored. Groups
    that cannot be pruned safely (grouped non-depthwise convs, bare parameters such as position
    embeddings, a single channel, attention layouts this tool does not know, anything whose trial cut
    breaks the forward pass) are left out; `left_alone` says why, by layer name. Trial cuts are made on a
    copy of the model taken here, so later changes to the live model (hooks, parametrizations, training)
    never reach them.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, ignore: Sequence[str] = (),
                 prune_embedding: bool = False):
        from catalyst_deploy.surgery.attention import find_attention
        from catalyst_deploy.surgery.attention_modules import convert_attention
        from catalyst_deploy.surgery.shuffle_modules import convert_shuffles
        from catalyst_deploy.surgery.groups import find_groups, groups_that_break

        self.converted, kept_whole = convert_attention(model, example)
        self.converted.update(convert_shuffles(model))
        self.model, self.example = model, example
        self.names = {m: n for n, m in model.named_modules()}
        ignored = self._resolve_ignored(ignore)  # fills left_alone with the output layer and --ignore
        heads, attention_left_alone = find_attention(model)
        self.left_alone.update({**attention_left_alone, **kept_whole})
        heads = [h for h in heads if h.module.qkv not in ignored]
        self.dg = build_dependency_graph(model, example)
        self._set_groups(*find_groups(self, ignored, heads, prune_embedding))
        self._architecture = copy.deepcopy(model).cpu()  # for trial cuts only
        self._shapes = None  # its meta-device twin for trial MACs (False: counts differ, use real copies)
        broken = groups_that_break(self)
        for g, reason in broken.items():
            self.left_alone.setdefault(self.root_name(g), reason)
        if broken:
            kept = [g for g in range(len(self.groups)) if g not in broken]
            self._set_groups([self.groups[g] for g in kept], [self.units[g] for g in kept])

    @property
    def num_channels(self) -> int:
        return self.offsets[-1]

    def root_name(self, g: int) -> str:
        return self.names.get(self.groups[g][0].dep.target.module, "?")

    def kind(self, g: int) -> str:
        """'heads' (an attention module's heads), 'embedding' (a transformer's embedding width) or 'channels'."""
        return unit_kind(self.units[g])

    def heads(self, g: int):
        """The `attention.AttentionHeads` of a head group, None for the other groups."""
        return self.units[g] if is_heads(self.units[g]) else None

    def unit_of_position(self, g: int) -> torch.Tensor:
        """The channel (within group `g`) of each of the group root's positions (a head for each qkv row)."""
        return unit_positions(self.units[g], self.sizes[g])

    def importance(self, imp) -> torch.Tensor:
        """A torch-pruning importance (`imp(group)` -> one score per root position) as one score per global
        channel: the mean over a head's positions for head groups. Raises CatalystDeployError naming the
        first group `imp` cannot score (e.g. BatchNorm scales where a group has no BatchNorm)."""
        parts = []
        for g, group in enumerate(self.groups):
            scores = imp(group)
            if scores is None:
                raise CatalystDeployError(f"{type(imp).__name__} cannot score {self.kind(g)} of {self.root_name(g)} "
                                          "(none of the layers it reads is in that group): choose another method")
            unit = self.unit_of_position(g)
            total = torch.zeros(self.sizes[g]).index_add_(0, unit, scores.detach().float().cpu())
            parts.append(total / torch.bincount(unit, minlength=self.sizes[g]).float())
        return torch.cat(parts)

    def group_of_channel(self) -> torch.Tensor:
        """Group index of every global channel."""
        return torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes))

    # ---- producer slices (what a regularizer acts on) ------------------------------------------
    def producer_slices(self, skip_normalized: bool = False) -> list[ParamSlice]:
        """Every parameter slice that *produces* a channel: conv/linear output rows, biases, norm scale/shift.

        Consumers' input columns are left out on purpose, so that no parameter entry belongs to two
        channels: a channel whose producer slices are all zero outputs exactly zero (for activations with
        f(0) = 0), and scaling a channel's producer slices scales the channel.

        `skip_normalized` also leaves out the rows of convs/linears whose output goes only into a
        BatchNorm: the BN makes them scale-invariant, while BN scale and shift alone set the channel.
        """
        skip = self._normalized_producers() if skip_normalized else set()
        owner: dict[tuple[int, int], tuple[nn.Parameter, int, dict[int, int]]] = {}
        for g, group in enumerate(self.groups):
            for item in group:
                dep = item.dep
                if not self.dg.is_out_channel_pruning_fn(dep.handler) or dep.target.module in skip:
                    continue
                if self.heads(g) is not None and dep.target.module is not self.heads(g).module.qkv:
                    continue  # a head is produced by its qkv rows alone
                unit = self.unit_of_position(g)
                for param, dim in _output_params(dep.target.module):
                    entry = owner.setdefault((id(param), dim), (param, dim, {}))
                    for pos, root in zip(item.idxs, item.root_idxs):
                        entry[2].setdefault(int(pos), self.offsets[g] + int(unit[int(root)]))
        slices = []
        for param, dim, mapping in owner.values():
            order = sorted(mapping)
            slices.append(ParamSlice(param, dim, torch.tensor(order, dtype=torch.long, device=param.device),
                                     torch.tensor([mapping[p] for p in order], dtype=torch.long, device=param.device)))
        return slices

    def _normalized_producers(self) -> set[nn.Module]:
        """Convs/linears whose every consumer is a BatchNorm."""
        found = set()
        for module, node in self.dg.module2node.items():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and node.outputs and all(
                    isinstance(out.module, nn.modules.batchnorm._BatchNorm) for out in node.outputs):
                found.add(module)
        return found

    # ---- plans and trial cuts --------------------------------------------------------------------
    def plan_for(self, mask: torch.Tensor) -> dict:
        """The layer plan that removes the channels set in the global boolean `mask`."""
        removed: dict[str, dict[str, set[int]]] = {}
        removed_channels: dict[str, list[int]] = {}
        attention: dict[str, dict] = {}
        params: dict[str, set[int]] = {}
        for g, group in enumerate(self.groups):
            idxs = mask[self.offsets[g]:self.offsets[g + 1]].nonzero().flatten().tolist()
            if not idxs:
                continue
            removed_channels[self.root_name(g)] = idxs
            if self.heads(g) is not None:
                attention.update(head_cut(self.heads(g), idxs, removed))
                continue
            root = group[0].dep
            for item in self.dg.get_pruning_group(root.target.module, root.handler,
                                                  positions_of(self.units[g], self.sizes[g], idxs)):
                module = item.dep.target.module
                if isinstance(module, nn.Parameter):  # an embedding's class token, position embedding...
                    params.setdefault(self.dg._param_to_name[module], set()).update(int(i) for i in item.idxs)
                    continue
                if module not in self.names or layer_pruner(module) is None:
                    continue  # index-only nodes (add, concat, flatten) have nothing to cut
                kind = "out" if self.dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
                removed.setdefault(self.names[module], {}).setdefault(kind, set()).update(int(i) for i in item.idxs)
        return make_plan(self._architecture, removed, removed_channels, attention, self.converted,
                         param_cuts(self, params))

    def cut_copy(self, mask: torch.Tensor) -> nn.Module:
        """A CPU copy of the model as it was when the graph was built, with the channels in `mask` removed."""
        return apply_plan(copy.deepcopy(self._architecture), self.plan_for(mask))

    def trial_macs(self, mask: torch.Tensor) -> int:
        """MACs of the model with the channels in `mask` removed, measured by cutting a copy: a shape-only copy
        on the meta device (no weights to copy) where it counts exactly what a real copy does."""
        plan = self.plan_for(mask)
        if self._shapes is None:
            self._shapes = shape_only_copy(self._architecture, self.example.cpu())
        if self._shapes is not False:
            try:
                return count_macs(apply_plan(copy.deepcopy(self._shapes), plan), self.example.to("meta"))[0]
            except Exception:  # noqa: BLE001 - an op without a meta kernel: count on a real copy
                self._shapes = False
        return count_macs(apply_plan(copy.deepcopy(self._architecture), plan), self.example.cpu())[0]

    def layers_of_group(self, g: int) -> list[str]:
        """Names of the layers whose input or output channels group `g` sets."""
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[self.offsets[g]] = True
        return list(self.plan_for(mask)["layers"])

    def _resolve_ignored(self, ignore: Sequence[str]) -> list[nn.Module]:
        modules = dict(self.model.named_modules())
        missing = [n for n in ignore if n not in modules]
        if missing:
            raise UsageError(f"--ignore {missing[0]!r} is not a module of the model{did_you_mean(missing[0], modules)}")
        ignored = [sub for n in ignore for sub in modules[n].modules()]  # a block name covers its layers
        head = output_layer(self.model, self.example)
        self.left_alone = {self.names[head]: "the output layer (its outputs are the classes)"} if head else {}
        self.left_alone.update({n: "--ignore" for n in ignore})
        return ignored + ([head] if head is not None else [])

    def _set_groups(self, groups: list, units: list) -> None:
        self.groups, self.units = groups, units
        self.sizes = [group_size(g, u) for g, u in zip(groups, units)]
        self.unit_widths = [unit_width(u) for u in units]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)


def channel_norms(slices: Sequence[ParamSlice], num_channels: int) -> torch.Tensor:
    """L2 norm of every channel's producer slices (one fused pass over the parameters), on the CPU."""
    device = slices[0].param.device if slices else torch.device("cpu")
    sq = torch.zeros(num_channels, device=device, dtype=torch.float32)
    with torch.no_grad():
        for s in slices:
            other = [d for d in range(s.param.dim()) if d != s.dim]
            per_pos = s.param.detach().float().pow(2).sum(dim=other) if other else s.param.detach().float().pow(2)
            sq.index_add_(0, s.chan, per_pos[s.pos])
    return sq.sqrt().cpu()


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


def consumer_columns(graph: ChannelGraph, channels=None) -> list[tuple]:
    """(weight, input positions) of every conv/linear that consumes a channel of `graph` (a global channel
    index in `channels`, every channel when None), each weight once with its positions sorted."""
    from torch import nn

    found: dict[int, tuple] = {}
    for g, group in enumerate(graph.groups):
        for item in group:
            module = item.dep.target.module
            if graph.dg.is_out_channel_pruning_fn(item.dep.handler) or not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                continue  # a grouped conv's input column is one block's column: not one per channel (units.py)
            unit = graph.unit_of_position(g)
            for pos, root in zip(item.idxs, item.root_idxs):
                if channels is None or graph.offsets[g] + int(unit[int(root)]) in channels:
                    found.setdefault(id(module.weight), (module.weight, set()))[1].add(int(pos))
    return [(weight, sorted(positions)) for weight, positions in found.values()]

