"""Where a resumed run continues, and the one place that restores it.

A checkpoint (`checkpoint.Checkpointer.load`, read with `weights_only=True` and checked by `payload_problem`)
says which phase it was written in and at which step. `Resume` reads it once:

    phase, state     the phase the run continues in and its `PhaseState` (step, optimizer state), which the
                     phase's training is given as its start; the phases before it are not run again
    mask             after the cut: the mask the pruned architecture is rebuilt from (its plan, on the dense
                     model) before the pruned weights are loaded
    record(report)   what the run had recorded: the report so far, the steps the method's phase left to the
                     recovery, the dense weights (for the deployment comparison)
    restore(model, method)
                     the checkpoint's model weights (into the model as that phase trains it: the dense model,
                     with the method's additions in the method's phase, the cut one after it), the method's
                     state, then the RNG states as they were when the checkpoint was written, exactly once;
                     returns `state`

The phase runner (`phases.PhaseRunner.run`) builds the model the checkpoint's phase trains, calls `restore`,
and runs that phase from the step it returns and the phases after it; besides the dense weights `record`
hands it (loaded before the method starts or the cut is rebuilt), it restores nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from catalyst_deploy.run.checkpoint import set_rng_state
from catalyst_deploy.run.train import PhaseState

if TYPE_CHECKING:
    from torch import nn

    from catalyst_deploy.methods.base import PruningMethod
    from catalyst_deploy.report import PruneReport

# the report's fields a resumed run takes over from the checkpoint (the rest is filled in again as it runs)
RECORDED = ("accuracy", "val_accuracy", "steps", "seconds", "method", "latency_aware", "channels")


@dataclass(frozen=True)
class Recorded:
    """What the run had recorded, besides the report: the steps its method's phase left to the recovery and
    the dense weights after pre-training (None without pre-training: the setup's model is the dense one)."""

    unused_steps: int = 0
    dense_state: dict | None = None


class Resume:
    """A loaded checkpoint, as the point the run continues from."""

    def __init__(self, payload: dict):
        self.payload = payload
        self.phase: str = payload["phase"]
        self.state: PhaseState = payload["state"]
        self.restored = False

    @property
    def mask(self) -> torch.Tensor:
        """The prune mask a checkpoint written after the cut carries (`Checkpointer.carry`)."""
        return torch.tensor(self.payload["mask"])

    def record(self, report: PruneReport) -> Recorded:
        """Put the report so far into `report`; the rest of what the run had recorded."""
        from catalyst_deploy.report import PruneReport

        restored = PruneReport.from_dict(self.payload["report"])
        for key in RECORDED:
            setattr(report, key, getattr(restored, key))
        return Recorded(self.payload.get("unused_steps", 0), self.payload.get("dense_state"))

    def restore(self, model: nn.Module, method: PruningMethod | None = None) -> PhaseState:
        """Load the checkpoint's weights into `model` (built as the checkpoint's phase trains it), the method's
        state into `method` (in the method's phase), and the RNG states; once. The phase state to continue from."""
        if self.restored:
            raise RuntimeError("a checkpoint is restored once, into the model its phase trains")
        model.load_state_dict(self.payload["model"])
        if method is not None:
            method.load_state_dict(self.payload["method"])
        set_rng_state(self.payload["rng"])
        self.restored = True
        return self.state
