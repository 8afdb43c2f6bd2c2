"""The baseline methods, behind the same interface as Catalyst.

Rankings come from torch-pruning's importance estimators; group lasso and network slimming use
torch-pruning's own regularizers (`GroupNormPruner`, `BNScalePruner`) with the strength `reg_strength`
(chosen on a validation split in benchmarks/compare.py). One-shot methods (l1, taylor, random) fine-tune
the dense model without a penalty during the regularized phase, so every method gets the same schedule.
"""

from __future__ import annotations

from catalyst_deploy.methods.base import PruningMethod
from catalyst_deploy.methods.tp_pruner import group_norm_pruner

DEFAULT_REG_STRENGTH = 1e-4  # torch-pruning's default for both regularizers


class _ImportanceRanking(PruningMethod):
    """Priority = minus torch-pruning's group importance (least important pruned first)."""

    def _importance(self):
        raise NotImplementedError

    def priority(self):
        import torch

        with torch.no_grad():
            return -self.graph.importance(self._importance())


class L1Ranking(_ImportanceRanking):
    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=1)


class RandomRanking(_ImportanceRanking):
    def __init__(self, seed: int = 0):
        self.seed = seed

    @classmethod
    def from_config(cls, cfg) -> RandomRanking:
        return cls(seed=cfg.seed)

    def priority(self):
        import torch

        return torch.rand(self.graph.num_channels, generator=torch.Generator().manual_seed(self.seed))


class TaylorRanking(_ImportanceRanking):
    """First-order Taylor importance |w * dL/dw|, accumulated over the phase every `every` steps."""

    def __init__(self, every: int = 10):
        self.every, self._step, self._acc = every, 0, None

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupTaylorImportance()

    def before_step(self) -> None:
        self._step += 1
        if self._step % self.every == 0 or self._acc is None:
            scores = super().priority()
            self._acc = scores if self._acc is None else self._acc + scores

    def priority(self):
        if self._acc is None:
            raise RuntimeError("taylor importance needs at least one training step with gradients")
        return self._acc

    def state_dict(self) -> dict:
        return {"step": self._step, "acc": self._acc}

    def load_state_dict(self, state: dict) -> None:
        self._step, self._acc = state["step"], state["acc"]


class GroupLasso(_ImportanceRanking):
    """torch-pruning's group-norm penalty gradient added before every optimizer step."""

    def __init__(self, reg: float = DEFAULT_REG_STRENGTH):
        self.reg = reg

    @classmethod
    def from_config(cls, cfg) -> GroupLasso:
        return cls(reg=cfg.reg_strength if cfg.reg_strength is not None else DEFAULT_REG_STRENGTH)

    def start(self, graph, budget, steps) -> None:
        super().start(graph, budget, steps)
        self.pruner = self._pruner(graph)

    def _pruner(self, graph):
        return group_norm_pruner(graph, graph.model, importance=self._importance(), reg=self.reg)

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2)

    def before_step(self) -> None:
        self.pruner.regularize(self.graph.model)


class NetworkSlimming(GroupLasso):
    @classmethod
    def cannot_rank(cls, graph) -> str | None:
        """Slimming reads BatchNorm scales: a group without a BatchNorm (a transformer's heads and MLP units) has
        nothing to rank by."""
        from torch import nn

        bare = [g for g, group in enumerate(graph.groups)
                if not any(isinstance(dep.target.module, nn.modules.batchnorm._BatchNorm) for dep, _ in group)]
        if not bare:
            return None
        return (f"slimming ranks channels by their BatchNorm scale, and {len(bare)} of {len(graph.groups)} channel groups "
                f"have no BatchNorm (e.g. the {graph.kind(bare[0])} of {graph.root_name(bare[0])}): choose another "
                "--method (catalyst, l1, group-lasso, taylor, random)")

    def _pruner(self, graph):
        return group_norm_pruner(graph, graph.model, "BNScalePruner", importance=self._importance(), reg=self.reg)

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.BNScaleImportance()
