"""DepGraph (Fang et al., CVPR 2023) the way torch-pruning ships it and its own benchmark scripts drive it.

- **Sparsity training**: after every backward pass, `GroupNormPruner.regularize` adds its group penalty
  gradient (strength `reg`, scaled per channel between 1 and 2**4 by the group-normalised L2 importance, so
  the least important channels are pushed hardest), and the optimizer runs **without weight decay** during
  the phase, as torch-pruning's `reproduce/main.py` trains its sparse models.
- **Ranking**: its importance (`GroupMagnitudeImportance(p=2, normalizer="max")`) with **global pruning**,
  applied **progressively**: on a copy of the sparse model, the pruner removes channels in small steps
  (`iterative_steps`, each step re-scoring what is left) until the MACs reach the target. The order in which
  it removes them is this method's priority, so the shared cut (`surgery.allocation.Budget`, with the same
  `--round-to` and per-layer limit as every method) takes exactly that prefix, and recovery is identical.
- **Attention heads** are ranked by the same importance (a head's mean) after every channel the progressive
  pruning removed: torch-pruning 1.6's global head pruning fails at a step that removes no head (its head
  threshold is then unset), so its pruner leaves the qkv projections to the shared cut.
- **Groups through grouped convolutions** (ResNeXt, RegNet) likewise (torch-pruning 1.6's regularizer fails
  on them; methods/tp_pruner.py): neither its penalty nor its progressive removal, ranked by the same
  importance after the channels it removed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from catalyst_deploy.methods.base import ParamOverride, PruningMethod
from catalyst_deploy.methods.tp_pruner import group_norm_pruner

DEFAULT_REG = 5e-4  # torch-pruning's reproduce/main.py default for its sparsity learning (--reg)
ITERATIVE_STEPS = 400  # the same scripts' progressive pruning granularity (--iterative-steps)


class DepGraphPruner(PruningMethod):
    """torch-pruning's GroupNormPruner: its sparsity training, then its own progressive global ranking."""

    def __init__(self, reg: float = DEFAULT_REG, iterative_steps: int = ITERATIVE_STEPS):
        self.reg, self.iterative_steps = reg, iterative_steps

    @classmethod
    def from_config(cls, cfg) -> DepGraphPruner:
        return cls(reg=cfg.reg_strength if cfg.reg_strength is not None else DEFAULT_REG)

    def start(self, graph, budget, steps: int) -> None:
        super().start(graph, budget, steps)
        self.pruner = self._pruner(graph.model)

    def param_overrides(self) -> list[ParamOverride]:
        return [ParamOverride(tuple(self.graph.model.parameters()), weight_decay=0.0)]  # the sparse phase: no decay

    def before_step(self) -> None:
        self.pruner.regularize(self.graph.model)

    def priority(self) -> torch.Tensor:
        """Removal order of torch-pruning's progressive global pruning (first removed = highest); the
        channels it keeps follow, least important first."""
        import torch_pruning as tp

        model = copy.deepcopy(self.graph.model).eval()
        pruner = self._pruner(model)
        names = {m: n for n, m in model.named_modules()}
        graph = self.graph
        alive = {graph.root_name(g): list(range(graph.offsets[g], graph.offsets[g + 1])) for g in range(len(graph.sizes))}
        order: list[int] = []
        example = graph.example.detach().to(next(model.parameters()).device)
        macs = tp.utils.count_ops_and_params(model, example_inputs=example)[0]
        with torch.no_grad():
            while macs > self.budget.target_macs and pruner.current_step < pruner.iterative_steps:
                for group in pruner.step(interactive=True):
                    root = names.get(group[0].dep.target.module)
                    left = alive.get(root)
                    if left is None:  # a group the channel graph leaves whole: cannot happen (ignored below)
                        raise RuntimeError(f"torch-pruning pruned {root!r}, which the channel graph leaves whole")
                    removed = sorted(set(int(i) for i in group[0].idxs), reverse=True)
                    order.extend(left[i] for i in sorted(removed))
                    for i in removed:
                        del left[i]
                    group.prune()
                macs = tp.utils.count_ops_and_params(model, example_inputs=example)[0]
        priority = -self._final_importance()  # kept channels: in [-1, 0], least important first
        for rank, channel in enumerate(order):
            priority[channel] = 1.0 + len(order) - rank
        return priority

    def _final_importance(self) -> torch.Tensor:
        """The group-normalised importance of every channel on the sparse model (each group's max is 1)."""
        with torch.no_grad():
            return self.graph.importance(self.pruner.importance)

    def _pruner(self, model: nn.Module):
        """A GroupNormPruner on `model` (the live model or a copy) over the groups the channel graph cuts
        (methods/tp_pruner.py): global, progressive, with the run's --round-to and per-layer limit."""
        import torch_pruning as tp

        return group_norm_pruner(
            self.graph, model, importance=tp.importance.GroupMagnitudeImportance(p=2, normalizer="max"),
            reg=self.reg, global_pruning=True, iterative_steps=self.iterative_steps, pruning_ratio=1.0,
            max_pruning_ratio=self.budget.max_ratio, round_to=self.budget.round_to)
