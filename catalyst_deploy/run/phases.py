"""The training phases of a prune run, each checkpointed and each able to continue from a checkpoint.

    pretrain_and_measure -> regularize (the method's phase, ended by its schedule; its decision)
    -> cut (the plan, applied) -> recover (gets the steps an early end of the phase left over)

`PhaseRunner.run` runs them in order. Each phase trains from the start (`PhaseState`: step and optimizer
state) it is given and never asks whether the run is resumed: on `--resume`, `run` builds the model as the
checkpoint's phase trains it, `resume.Resume.restore` loads the model, method and RNG states into it once,
and that phase continues from the checkpoint's step (its optimizer state with it); the phases before it are
not run again, their results (the report so far, the dense weights, the mask) come from the checkpoint.

The runner drives the pruning method through its interface (`methods.base.PruningMethod`) and never asks
which method it holds. Under torchrun each phase trains the model wrapped in DDP (`distributed.ddp`); the
state a method names at its decision points and the cut are checked to be identical on every rank
(`distributed.check_identical`), a method that decides from unsynchronised state has rank 0's decision
given to every rank, and a stop signal ends the phase at the same step on every rank."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import torch

from catalyst_deploy.run import distributed
from catalyst_deploy.methods import make_method
from catalyst_deploy.methods.base import Decision
from catalyst_deploy.surgery.plan import apply_plan
from catalyst_deploy.surgery.revive import revive_dead_channels
from catalyst_deploy.run.train import (DivergenceError, PhaseSettings, PhaseState, evaluate, phase_steps, to_device,
                                   train_phase)

if TYPE_CHECKING:
    from torch import nn

    from catalyst_deploy.run.resume import Resume

DIVERGED = 1e15  # a weight beyond this magnitude means the run diverged


class MethodHooks:
    """The training loop's view of a pruning method: its step hooks, plus what the runner does around them
    (the cross-rank check at each decision point the method names, the per-step trajectory record)."""

    def __init__(self, method, record_every: int = 0):
        self.method, self.record_every = method, record_every
        self.trajectory: list = []

    def before_step(self) -> None:
        self.method.before_step()

    def after_step(self, lr: float, step: int) -> None:
        self.method.after_step(lr, step)
        self.check_decision()
        if self.record_every and step % self.record_every == 0:
            point = self.method.trajectory_point()
            if point is not None:
                self.trajectory.append([step, point])

    def check_decision(self) -> None:
        """RankMismatch on every rank when the state the method names at a decision just taken differs."""
        decided = self.method.decision_state()
        if decided is not None:
            distributed.check_identical(*decided)

    def status(self) -> dict:
        return self.method.status()

    def done(self) -> bool:
        return self.method.done()


def from_rank0(decision: Decision) -> Decision:
    """Rank 0's decision on every rank (the identity in a single process)."""
    mask = distributed.broadcast(decision.mask.to(torch.uint8)).bool()
    return Decision(mask, distributed.broadcast(decision.priority))


class PhaseRunner:
    def __init__(self, cfg, setup, report, checkpointer, progress, log):
        self.cfg, self.s, self.rep, self.ckpt, self.progress, self.log = cfg, setup, report, checkpointer, progress, log
        self.unused_steps = 0
        self.dense_state: dict | None = None
        per_epoch = len(setup.loaders["train"])
        self.epoch_steps = phase_steps(1.0, per_epoch, cfg.steps_per_epoch)
        self.steps = {name: phase_steps(epochs, per_epoch, cfg.steps_per_epoch) for name, epochs in
                      (("pretrain", cfg.pretrain_epochs), ("regularize", cfg.reg_epochs), ("recover", cfg.recover_epochs))}

    def run(self, resume: Resume | None = None) -> tuple[nn.Module, torch.Tensor, dict]:
        """The phases, from the start or from the checkpoint `resume` holds: the dense model (CPU copy, for the
        deployment comparison), the mask and the plan. A resumed run builds the model as the checkpoint's phase
        trains it (the dense one, the method started on it, or the cut one), restores the checkpoint into it
        once, and runs that phase from the checkpoint's step, then the phases after it."""
        at = resume.phase if resume else "pretrain"
        method = mask = plan = dense = None
        if resume is not None:  # the model the checkpoint's phase trains
            recorded = resume.record(self.rep)
            self.unused_steps, self.dense_state = recorded.unused_steps, recorded.dense_state
            self.log(f"resuming at {at} step {resume.state.step}")
            if at != "pretrain":
                dense = self.dense_model()
            if at == "regularize":
                method = self.start_method()
            elif at in ("recover", "trained"):
                mask = resume.mask
                plan = self.cut(mask)
        start = resume.restore(self.s.model, method) if resume else PhaseState(0)  # the one restore
        if at == "pretrain":
            self.pretrain_and_measure(start)
            dense, start = self.dense_model(), PhaseState(0)
        if at in ("pretrain", "regularize"):
            mask = self.regularize(method if method is not None else self.start_method(), start, dense)
            plan, start = self.cut(mask), PhaseState(0)
            self.measure("after_surgery")
            self._save("recover", start)
        if at != "trained":
            self.recover(start)
        return dense, mask, plan

    def _save(self, phase: str, state: PhaseState, **extra) -> None:
        if not self.ckpt.enabled:  # ranks other than 0: nothing to gather
            return
        payload = {"phase": phase, "state": state, "model": self.s.model.state_dict(), "report": self.rep.to_dict(),
                   "unused_steps": self.unused_steps, "dense_state": self.dense_state, **extra}
        self.ckpt.save(payload)

    # ---- phases: each runs from the start it is given ---------------------------------------------
    def pretrain_and_measure(self, start: PhaseState) -> None:
        """Dense pre-training (demo from scratch; 0 epochs otherwise) and the dense accuracy."""
        cfg = self.cfg
        if self.steps["pretrain"]:
            self._train("pretrain", PhaseSettings(self.steps["pretrain"], cfg.pretrain_lr, cfg.momentum,
                                                  cfg.weight_decay), state=start, epoch_base=0)
            self.dense_state = {k: v.detach().cpu().clone() for k, v in self.s.model.state_dict().items()}
        self.measure("dense")

    def dense_model(self):
        """The dense model as a CPU copy, for the deployment comparison; the setup's model holds the dense weights
        (those after pre-training, which the checkpoints carry) from here until the cut."""
        if self.dense_state is not None:
            self.s.model.load_state_dict(self.dense_state)
        return copy.deepcopy(self.s.model).cpu().eval()

    def start_method(self):
        """The method of the settings, started on the dense model (it may add parameters to it)."""
        method = make_method(self.cfg)
        method.epoch_steps = self.epoch_steps
        # a method's set-up can take a while on a large model (the default Catalyst fits its MACs count by trial
        # cuts: 11 s on resnet50), so say what is happening before it starts, and how long it took when it was long
        self.log(f"{self.cfg.method}: setting up on {len(self.s.graph.groups)} channel groups")
        began = time.perf_counter()
        method.start(self.s.graph, self.s.budget, self.steps["regularize"])
        took = time.perf_counter() - began
        if took >= 2.0:
            self.log(f"{self.cfg.method}: set up in {took:.1f} s")
        return method

    def regularize(self, method, start: PhaseState, dense: nn.Module) -> torch.Tensor:
        """The method's phase; returns the prune mask (one bool per global channel). Kept channels the phase
        zeroed are restored from `dense` (surgery/revive.py)."""
        cfg = self.cfg
        hooks = MethodHooks(method, cfg.record_every)
        settings = PhaseSettings(self.steps["regularize"], cfg.lr, cfg.momentum, cfg.weight_decay, method.schedule)
        stats = self._train("regularize", settings, hooks=hooks, overrides=method.param_overrides(), state=start,
                            extra=lambda: {"method": method.state_dict()}, epoch_base=1000)
        self.measure("after_regularization")
        decision = method.finish(stats.steps)
        hooks.check_decision()
        if not method.synchronised:  # float noise in an importance must not split the ranks
            decision = from_rank0(decision)
        self.rep.channels["priority"] = [round(float(p), 5) for p in decision.priority]
        self.rep.method = method.report()
        revived = revive_dead_channels(self.s.graph, dense, ~decision.mask)
        if revived:
            self.log(f"{revived} kept channels had been zeroed by the phase (the --round-to blocks kept them): "
                     "restored to their dense weights, so that recovery can train them")
            self.rep.method = {**(self.rep.method or {}), "revived": revived}
        if (self.rep.method or {}).get("forced_to_zero") or revived:  # the model the (lossless) cut starts from
            self.measure("after_decision")
        self.rep.trajectory = hooks.trajectory or None
        self.unused_steps = self.steps["regularize"] - stats.steps
        return decision.mask

    def cut(self, mask: torch.Tensor) -> dict:
        """Apply the plan of `mask` to the setup's model (also to rebuild the pruned architecture on --resume); the
        checkpoints from here on carry the mask."""
        s = self.s
        plan = s.graph.plan_for(mask.cpu())
        distributed.check_identical("cut", {"mask": mask, "plan": plan, "weights": s.model})
        apply_plan(s.model, plan)
        to_device(s.model, s.device)
        self.ckpt.carry(mask=mask.tolist())  # every checkpoint from here on can be cut again on --resume
        return plan

    def recover(self, start: PhaseState) -> None:
        cfg = self.cfg
        steps = self.steps["recover"] + self.unused_steps
        self.rep.steps["recover"] = steps
        self._train("recover", PhaseSettings(steps, cfg.lr, cfg.momentum, cfg.weight_decay), state=start,
                    epoch_base=2000)
        self.measure("final")
        self._save("trained", PhaseState(steps))

    # ---- helpers -----------------------------------------------------------------------------------
    def _train(self, phase: str, settings: PhaseSettings, hooks=None, overrides=(), state=None, extra=lambda: {},
               epoch_base: int = 0):
        s, cfg = self.s, self.cfg
        if settings.steps == 0:
            self.rep.steps.setdefault(phase, 0)
            return type("Stats", (), {"steps": 0})()

        def checkpoint(phase_state: PhaseState) -> None:
            self._check_finite(phase, phase_state.step)
            self._save(phase, phase_state, **extra())
            if self._stop_agreed():
                self.ckpt.check_stop(lambda: None)

        class StopAware:  # hooks that also let SIGINT/SIGTERM end the phase at a step boundary
            def __getattr__(self_, name):
                return getattr(hooks, name)

            def done(self_) -> bool:
                return self._stop_agreed() or (hooks is not None and hooks.done())

            def before_step(self_):
                if hooks:
                    hooks.before_step()

            def after_step(self_, lr, step):
                if hooks:
                    hooks.after_step(lr, step)

            def status(self_):
                return hooks.status() if hooks else {}

        try:
            with distributed.ddp(s.model, s.device, cfg.sync_bn) as model:
                stats = train_phase(model, s.loaders["train"], s.device, settings, label=phase, hooks=StopAware(),
                                    overrides=overrides, amp=cfg.amp, progress=self.progress,
                                    state=state, checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every,
                                    epoch_base=epoch_base)
        except DivergenceError as err:
            last = self.ckpt.folder.file("checkpoints/last.pt")
            where = (f"Last good checkpoint: {last} (lower --lr, then --resume or --overwrite)" if last.is_file()
                     else "No checkpoint was saved before it (lower --lr and start again)")
            raise DivergenceError(f"{err}; nothing was written from the diverged model. {where}") from None
        self.rep.steps[phase] = stats.steps
        self.rep.seconds[phase] = round(self.rep.seconds.get(phase, 0.0) + stats.seconds, 2)
        return stats

    def _stop_agreed(self) -> bool:
        """Whether a stop signal came; under torchrun every rank asks at the same step boundary and they agree
        (a signal may reach one rank before the others)."""
        if distributed.any_rank(bool(self.ckpt.stop_requested)) and not self.ckpt.stop_requested:
            self.ckpt.stop_requested = "a stop signal on another rank"
        return bool(self.ckpt.stop_requested)

    def _check_finite(self, phase: str, step: int) -> None:
        """DivergenceError when a weight is non-finite or beyond DIVERGED (no trained network holds such
        weights; at a far too high learning rate they reach 1e34 while the loss can stay finite)."""
        for name, p in self.s.model.named_parameters():
            if not torch.isfinite(p).all() or float(p.detach().abs().max()) > DIVERGED:
                raise DivergenceError(f"{phase}: training diverged, parameter {name} is non-finite or above "
                                      f"{DIVERGED:g} by step {step}")

    def measure(self, key: str) -> None:
        """Test (and val) accuracy as `key` in the report; under torchrun each rank evaluates its share and
        `evaluate` sums the counts, so every rank gets the same number."""
        s = self.s
        acc = evaluate(s.model, s.loaders["test"], s.device, self.cfg.amp)
        self.rep.accuracy[key] = round(acc, 3)
        if s.loaders.get("val") is not None:
            self.rep.val_accuracy = self.rep.val_accuracy or {}
            self.rep.val_accuracy[key] = round(evaluate(s.model, s.loaders["val"], s.device, self.cfg.amp), 3)
        self.log(f"accuracy {key.replace('_', ' ')}: {acc:.2f}%")
