"""The one interface every pruning method implements.

The training loop calls, per optimisation step of the regularized phase:

    loss.backward(); method.before_step(); optimizer.step(); method.after_step(lr)

and, when the phase ends, `priority()` ranks the channels for the cut. Channels are the global channels
of a `graph.ChannelGraph`; a higher priority means "prune first" (the opposite sign of torch-pruning's
importance).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph


class PruningMethod(abc.ABC):
    """Base class: a no-op regularizer; subclasses override what they need, never the signatures."""

    @classmethod
    def from_config(cls, cfg) -> PruningMethod:
        """Build the method from the run settings (config.PruneConfig); reads only what it needs."""
        return cls()

    @classmethod
    def cannot_rank(cls, graph: ChannelGraph) -> str | None:
        """Why this method cannot rank every channel group of `graph`, or None when it can; asked before any
        training, so that a run that would fail at the cut is refused at once."""
        return None

    def start(self, graph: ChannelGraph, budget: Budget) -> None:
        """Called once, before the regularized phase, with the graph of the model being trained and the
        budget its prune set must meet (MACs oracle, target, limits, latency weights)."""
        self.graph, self.budget = graph, budget

    def before_step(self) -> None:
        """After `backward()`, before the optimizer step: add penalty gradients, gather statistics."""

    def after_step(self, lr: float) -> None:
        """After the optimizer step, with the learning rate it used: proximal updates."""

    def no_decay_params(self) -> list[nn.Parameter]:
        """Parameters that must train without weight decay during the regularized phase."""
        return []

    @abc.abstractmethod
    def priority(self) -> torch.Tensor:
        """One prune priority per global channel (CPU float tensor); higher is pruned first."""

    def state(self) -> dict:
        """JSON-able summary for the report (lambda history, decisions...)."""
        return {}

    def state_dict(self) -> dict:
        """Everything needed to continue the phase after a restart (tensors allowed)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
