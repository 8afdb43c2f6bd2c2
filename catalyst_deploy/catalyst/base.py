"""The one interface every pruning method implements (STYLE.md 5).

The training loop calls, per optimisation step of the regularized phase:

    loss.backward(); method.before_step(); optimizer.step(); method.after_step(lr)

and, when the phase ends, `scores()` ranks the channels for the cut. Channels are the global channels
of a `ChannelGraph` (surgery.py); a higher score means "prune first".
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from catalyst_deploy.surgery import ChannelGraph


class PruningMethod(abc.ABC):
    """Base class: a no-op regularizer; subclasses override what they need, never the signatures."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def start(self, graph: ChannelGraph) -> None:
        """Called once, before the regularized phase, with the graph of the model being trained."""
        self.graph = graph

    def before_step(self) -> None:
        """After `backward()`, before the optimizer step: add penalty gradients, gather statistics."""

    def after_step(self, lr: float) -> None:
        """After the optimizer step, with the learning rate it used: proximal updates."""

    def regularized_params(self) -> list[nn.Parameter]:
        """Parameters that must train without weight decay during the regularized phase."""
        return []

    @abc.abstractmethod
    def scores(self) -> torch.Tensor:
        """One prune priority per global channel (CPU float tensor); higher is pruned first."""

    def state(self) -> dict:
        """JSON-able summary for the report (lambda history, decisions...)."""
        return {}
