"""The baseline methods of DESIGN.md §3, behind the same interface as Catalyst.

Rankings come from torch-pruning's importance estimators; group lasso and network slimming use
torch-pruning's own regularizers (`GroupNormPruner`, `BNScalePruner`). One-shot methods (l1, taylor,
random) train the dense model without a penalty during the regularized phase, so every method gets the
same schedule.
"""

from __future__ import annotations

import torch

from catalyst_deploy.catalyst.base import PruningMethod
from catalyst_deploy.surgery import ChannelGraph


class _ImportanceRanking(PruningMethod):
    """Scores = minus torch-pruning's group importance (least important pruned first)."""

    def _importance(self):
        raise NotImplementedError

    def scores(self) -> torch.Tensor:
        imp = self._importance()
        with torch.no_grad():
            parts = [imp(group).detach().float().cpu() for group in self.graph.groups]
        return -torch.cat(parts)


class L1Ranking(_ImportanceRanking):
    name = "l1"
    summary = "one-shot filter-norm (L1) ranking, Li et al. 2017"

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=1)


class RandomRanking(_ImportanceRanking):
    name = "random"
    summary = "random channels (a floor every method must beat)"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(self.graph.num_channels, generator=gen)


class TaylorRanking(_ImportanceRanking):
    """First-order Taylor importance |w * dL/dw|, accumulated over the phase every `every` steps."""

    name = "taylor"
    summary = "first-order Taylor importance accumulated during fine-tuning (Molchanov et al. 2019)"

    def __init__(self, every: int = 10):
        self.every, self._step, self._acc = every, 0, None

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupTaylorImportance()

    def before_step(self) -> None:
        self._step += 1
        if self._step % self.every == 0 or self._acc is None:
            scores = super().scores()
            self._acc = scores if self._acc is None else self._acc + scores

    def scores(self) -> torch.Tensor:
        if self._acc is None:
            raise RuntimeError("taylor importance needs at least one training step with gradients")
        return self._acc


class _TorchPruningRegularized(_ImportanceRanking):
    """Adds a torch-pruning pruner's penalty gradient before every optimizer step."""

    def __init__(self, reg: float):
        self.reg = reg

    def _pruner(self, graph: ChannelGraph):
        raise NotImplementedError

    def start(self, graph: ChannelGraph) -> None:
        super().start(graph)
        self.pruner = self._pruner(graph)


class GroupLasso(_TorchPruningRegularized):
    name = "group-lasso"
    summary = "group-norm sparsity penalty (torch-pruning GroupNormPruner), then L2 group ranking"

    def _pruner(self, graph):
        import torch_pruning as tp

        return tp.pruner.GroupNormPruner(graph.model, graph.example, importance=self._importance(), reg=self.reg,
                                         ignored_layers=self._ignored(graph))

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2)

    def before_step(self) -> None:
        self.pruner.regularize(self.graph.model)

    @staticmethod
    def _ignored(graph):
        from catalyst_deploy.surgery import output_layer

        return [output_layer(graph.model, graph.example)]


class NetworkSlimming(GroupLasso):
    name = "slimming"
    summary = "L1 on BN scales (Liu et al. 2017, torch-pruning BNScalePruner), then BN-scale ranking"

    def _pruner(self, graph):
        import torch_pruning as tp

        return tp.pruner.BNScalePruner(graph.model, graph.example, importance=self._importance(), reg=self.reg,
                                       ignored_layers=self._ignored(graph))

    def _importance(self):
        import torch_pruning as tp

        return tp.importance.BNScaleImportance()
