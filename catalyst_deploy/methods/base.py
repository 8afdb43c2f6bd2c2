"""The one interface every pruning method implements; the phase runner (`run/phases.py`) drives any method
through it and never asks which one it holds.

A method's life in a run (resumed runs call `load_state_dict` after `start`):

    method = make_method(cfg); method.start(graph, budget, steps)
    optimizer from param_overrides(); learning rate: schedule ("cosine" or "constant") over the phase
    per step:  loss.backward(); before_step(); optimizer.step(); after_step(lr, step)
               then decision_state() (checked across ranks when not None); trajectory_point()
               the phase ends after `steps` or as soon as done() (the steps left go to recovery)
    decision = finish(steps_used)     -> Decision(mask, priority); the cut follows
    report() -> report.json's "method"

Channels are the global channels of a `graph.ChannelGraph`; a higher priority means "prune first" (the
opposite sign of torch-pruning's importance). A ranking method only implements `priority()`: the default
`finish` cuts `budget.select(priority())`.

Under torchrun every rank runs the same method on its share of the data. A method whose decision is a
function of state the ranks hold identically (the gradients DDP averages and what is computed from them)
sets `synchronised = True` and names that state at its decision points (`decision_state`); the runner
compares it across ranks. Otherwise rank 0's decision is given to every rank (float noise in an importance
must not split the ranks).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch
    from torch import nn

    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph


@dataclass(frozen=True)
class ParamOverride:
    """Optimizer settings of some parameters during the method's phase: the learning rate as a multiple of the
    phase's, and their weight decay (None: the phase's). A parameter listed twice takes the last entry."""

    params: tuple[nn.Parameter, ...]
    lr_scale: float = 1.0
    weight_decay: float | None = None


class Decision(NamedTuple):
    """What a method decided: the prune mask (one bool per global channel) and the priority it ranked the
    channels by when it decided (report.json's `channels.priority`)."""

    mask: torch.Tensor
    priority: torch.Tensor


class PruningMethod(abc.ABC):
    """Base class: plain fine-tuning, then the cut of `priority()`; subclasses override what they need, never
    the signatures."""

    schedule: str = "cosine"  # the phase's learning rate over its steps: "cosine" or "constant"
    synchronised: bool = False  # True: `finish` decides from state identical on every rank (see module doc)
    epoch_steps: int | None = None  # optimizer steps of one pass over the training data (set by the runner)

    @classmethod
    def from_config(cls, cfg) -> PruningMethod:
        """Build the method from the run settings (config.PruneConfig); reads only what it needs."""
        return cls()

    @classmethod
    def cannot_rank(cls, graph: ChannelGraph) -> str | None:
        """Why this method cannot rank every channel group of `graph`, or None when it can; asked before any
        training, so that a run that would fail at the cut is refused at once."""
        return None

    def start(self, graph: ChannelGraph, budget: Budget, steps: int) -> None:
        """Called once, before the regularized phase, with the graph of the model being trained, the budget its
        prune set must meet (MACs oracle, target, limits, latency weights) and the phase's optimizer steps.
        A method may add trainable tensors to the model here: registered as module parameters, so that the
        optimizer, the state dict and the checkpoints see them."""
        self.graph, self.budget = graph, budget

    def param_overrides(self) -> list[ParamOverride]:
        """Per-parameter learning-rate scales and weight decays for the phase (after `start`); [] for none."""
        return []

    # ---- per step ---------------------------------------------------------------------------------
    def before_step(self) -> None:
        """After `backward()`, before the optimizer step: add penalty gradients, gather statistics."""

    def after_step(self, lr: float, step: int) -> None:
        """After the optimizer step, with the learning rate it used and the phase's step count (from 1):
        proximal updates, the method's own schedule."""

    def done(self) -> bool:
        """True to end the phase now (its unused steps go to recovery)."""
        return False

    def status(self) -> dict:
        """Fields for the progress bar (name -> number)."""
        return {}

    def decision_state(self) -> tuple[str, dict] | None:
        """Once, right after the step (or the `finish`) that took a decision: (where, {name: tensor or
        JSON-able value}), the state every rank must hold identically there; None otherwise."""
        return None

    def trajectory_point(self) -> list[float] | None:
        """One number per channel to record every `record_every` steps (report.trajectory), or None."""
        return None

    # ---- the decision -----------------------------------------------------------------------------
    @abc.abstractmethod
    def priority(self) -> torch.Tensor:
        """One prune priority per global channel (CPU float tensor); higher is pruned first."""

    def finish(self, steps_used: int) -> Decision:
        """End the phase after `steps_used` steps and decide. May change the model so that the cut of the mask
        is exact (fold what the method added to it, zero what it pruned)."""
        priority = self.priority()
        return Decision(self.budget.select(priority), priority)

    def report(self) -> dict | None:
        """JSON-able record of the phase for report.json (null for methods that keep none). A `log_c_at_freeze`
        entry (one number per channel) is drawn as bifurcation.png."""
        return None

    # ---- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue the phase after a restart: plain containers (dict, list, tuple), numbers,
        strings, None and tensors only (checkpoints are read with `torch.load(weights_only=True)`)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (after `start`)."""


def leave_out_of_ddp(model: nn.Module, names: list[str]):
    """Tell DDP to leave the parameters `names` of `model` alone (a method's variable that no forward pass uses,
    whose gradient the method computes itself); returns the function that undoes it, leaving no trace on the
    model (a saved model pickles its attributes: a resumed run must save the same bytes)."""
    from torch.nn.parallel import DistributedDataParallel

    attribute = "_ddp_params_and_buffers_to_ignore"  # where DDP looks (torch's documented workaround)
    before = getattr(model, attribute, None)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(before or ()) + names)

    def undo() -> None:
        if before is None:
            delattr(model, attribute)
        else:
            setattr(model, attribute, before)
    return undo
