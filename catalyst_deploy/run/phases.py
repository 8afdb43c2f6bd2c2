"""The training phases of a prune run, each checkpointed and each able to continue from a checkpoint.

    pretrain_and_measure -> regularize (the method's phase; Catalyst's controller freezes the prune set)
    -> cut (the plan, applied) -> recover (gets the steps an early cut left over)

Under torchrun each phase trains the model wrapped in DDP (`distributed.ddp`); the decisions are checked to be
identical on every rank at Catalyst's freeze and at the cut (`distributed.check_identical`), and a stop
signal ends the phase at the same step on every rank.
"""

from __future__ import annotations

import copy

import torch

from catalyst_deploy.run import distributed
from catalyst_deploy.methods import make_method
from catalyst_deploy.surgery.plan import apply_plan
from catalyst_deploy.run.train import (DivergenceError, PhaseSettings, PhaseState, evaluate, phase_steps, to_device,
                                   train_phase)

ORDER = ("pretrain", "regularize", "recover", "trained")
DIVERGED = 1e15  # a weight beyond this magnitude means the run diverged


class PhaseHooks:
    """Connects the training loop to a pruning method, Catalyst's controller, and the checkpointer."""

    def __init__(self, method, controller, record_every: int):
        self.method, self.controller, self.record_every = method, controller, record_every
        self.trajectory: list = []

    def before_step(self) -> None:
        self.method.before_step()

    def after_step(self, lr: float, step: int) -> None:
        self.method.after_step(lr)
        if self.controller is not None:
            was_frozen = self.controller.frozen
            self.controller.on_step(step)
            if self.controller.frozen and not was_frozen:
                check_freeze(self.method, step)
        if self.record_every and step % self.record_every == 0 and hasattr(self.method, "log_ratio"):
            self.trajectory.append([step, self.method.log_ratio().clamp(-50, 50).cpu().tolist()])

    def status(self) -> dict:
        if self.controller is None:
            return {}
        return {"flops": self.controller.current_ratio, "lam": self.method.lam}

    def done(self) -> bool:
        """Catalyst ends its phase once the frozen prune set is exactly zero: the rest goes to recovery."""
        return self.controller is not None and self.controller.frozen and self.method.settled()


def check_freeze(method, step: int) -> None:
    """Catalyst's state at the freeze is identical on every rank (RankMismatch on every rank otherwise)."""
    distributed.check_identical("freeze", {"mask": method.frozen, "d": method.d, "lambda": method.lam,
                                           "gates": method.s, "step": step})


class PhaseRunner:
    def __init__(self, cfg, setup, report, checkpointer, progress, log):
        self.cfg, self.s, self.rep, self.ckpt, self.progress, self.log = cfg, setup, report, checkpointer, progress, log
        self.resume: dict | None = None
        self.unused_steps = 0
        self.dense_state: dict | None = None
        per_epoch = len(setup.loaders["train"])
        self.steps = {name: phase_steps(epochs, per_epoch, cfg.steps_per_epoch) for name, epochs in
                      (("pretrain", cfg.pretrain_epochs), ("regularize", cfg.reg_epochs), ("recover", cfg.recover_epochs))}

    # ---- resuming ----------------------------------------------------------------------------------
    def resume_from(self, payload: dict | None) -> None:
        if payload is None:
            return
        from catalyst_deploy.run.checkpoint import set_rng_state
        from catalyst_deploy.report import PruneReport

        self.resume = payload
        restored = PruneReport.from_dict(payload["report"])
        for key in ("accuracy", "val_accuracy", "steps", "seconds", "catalyst", "latency_aware", "channels"):
            setattr(self.rep, key, getattr(restored, key))
        self.unused_steps = payload.get("unused_steps", 0)
        self.dense_state = payload.get("dense_state")
        set_rng_state(payload["rng"])
        self.log(f"resuming at {payload['phase']} step {payload['state'].step}")

    def _resuming(self, phase: str) -> str | None:
        """'here' when the checkpoint is inside `phase`, 'past' when the phase is already done, else None."""
        if self.resume is None:
            return None
        at, this = ORDER.index(self.resume["phase"]), ORDER.index(phase)
        return "here" if at == this else "past" if at > this else None

    def _save(self, phase: str, state: PhaseState, **extra) -> None:
        if not self.ckpt.enabled:  # ranks other than 0: nothing to gather
            return
        payload = {"phase": phase, "state": state, "model": self.s.model.state_dict(), "report": self.rep.to_dict(),
                   "unused_steps": self.unused_steps, "dense_state": self.dense_state, **extra}
        self.ckpt.save(payload)

    # ---- phases ------------------------------------------------------------------------------------
    def pretrain_and_measure(self):
        """Dense pre-training (demo from scratch; 0 epochs otherwise) and the dense accuracy; returns the
        dense model (CPU copy) for the deployment comparison."""
        cfg, s = self.cfg, self.s
        where = self._resuming("pretrain")
        if self.steps["pretrain"] and where != "past":
            state = self._restore_model_and_state() if where == "here" else None
            self._train("pretrain", PhaseSettings(self.steps["pretrain"], cfg.pretrain_lr, cfg.momentum,
                                                  cfg.weight_decay), state=state, epoch_base=0)
        if self.dense_state is not None and where == "past":
            s.model.load_state_dict(self.dense_state)
        if where != "past" or "dense" not in self.rep.accuracy:
            self.measure("dense")
        dense = copy.deepcopy(s.model).cpu().eval()
        if self.steps["pretrain"]:
            self.dense_state = {k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()}
        return dense

    def regularize(self) -> torch.Tensor:
        """The method's phase; returns the prune mask (one bool per global channel)."""
        if self._resuming("regularize") == "past":
            return torch.tensor(self.resume["mask"])  # the cut and the recovery state follow
        cfg, s = self.cfg, self.s
        method = make_method(cfg)
        method.start(s.graph, s.budget)
        controller = self._controller(method)
        hooks = PhaseHooks(method, controller, cfg.record_every)
        state = None
        if self._resuming("regularize") == "here":
            state = self._restore_model_and_state()
            method.load_state_dict(self.resume["method"])
            if controller is not None:
                controller.load_state_dict(self.resume["controller"])
        settings = PhaseSettings(self.steps["regularize"], cfg.lr, cfg.momentum, cfg.weight_decay,
                                 "constant" if controller is not None else "cosine")
        def extra() -> dict:
            return {"method": method.state_dict(), "controller": controller.state_dict() if controller else None}

        stats = self._train("regularize", settings, hooks=hooks, no_decay=method.no_decay_params(),
                            lr_scales=method.lr_scales() if hasattr(method, "lr_scales") else None,
                            state=state, extra=extra, epoch_base=1000)
        self.measure("after_regularization")
        # Catalyst's priority is computed from synchronised state (and checked at the freeze); a baseline's is
        # rank 0's, so that float noise in its importance cannot split the ranks
        priority = method.priority() if controller else distributed.broadcast(method.priority())
        self.rep.channels["priority"] = [round(float(p), 5) for p in priority]
        mask = self._finish_catalyst(method, controller, stats.steps) if controller else s.budget.select(priority)
        self.rep.trajectory = hooks.trajectory or None
        return mask

    def _controller(self, method):
        from catalyst_deploy.methods.catalyst import CatalystRegularizer
        from catalyst_deploy.methods.controller import CatalystController

        if not isinstance(method, CatalystRegularizer):
            return None
        return CatalystController(method, self.s.budget, self.s.macs, self.cfg.catalyst, self.steps["regularize"],
                                  self.cfg.lr)

    def _finish_catalyst(self, method, controller, used: int) -> torch.Tensor:
        """Freeze if the phase ended first, zero what the phase did not, fold the gates; report the split."""
        if not controller.frozen:
            controller.freeze(used, forced=True)
            check_freeze(method, used)
        forced = int((method.s.detach()[method.frozen] != 0).sum())
        with torch.no_grad():
            method.s.data[method.frozen] = 0.0
        method.fold()
        self.unused_steps = self.steps["regularize"] - used
        self.rep.catalyst = {**controller.state(), **method.state(), "phase_steps": used, "forced_to_zero": forced,
                             "log_c_at_freeze": controller.split.log_c}
        return method.frozen.cpu().clone()

    def cut(self, mask: torch.Tensor) -> dict:
        """Apply the plan of `mask` (also when resuming past the cut: the setup model is the dense one)."""
        s = self.s
        plan = s.graph.plan_for(mask.cpu())
        distributed.check_identical("cut", {"mask": mask, "plan": plan, "weights": s.model})
        apply_plan(s.model, plan)
        to_device(s.model, s.device)
        if self._resuming("recover") is None and self._resuming("trained") is None:
            self.measure("after_surgery")
            self._save("recover", PhaseState(0), mask=mask.tolist())
        return plan

    def recover(self) -> None:
        cfg = self.cfg
        where = self._resuming("recover")
        if self._resuming("trained") == "here":
            self.s.model.load_state_dict(self.resume["model"])
            return
        state = None
        if where == "here":
            state = self._restore_model_and_state()
            state = state if state.step else None
        steps = self.steps["recover"] + self.unused_steps
        self.rep.steps["recover"] = steps
        self._train("recover", PhaseSettings(steps, cfg.lr, cfg.momentum, cfg.weight_decay), state=state,
                    epoch_base=2000)
        self.measure("final")
        self._save("trained", PhaseState(steps))

    # ---- helpers -----------------------------------------------------------------------------------
    def _train(self, phase: str, settings: PhaseSettings, hooks=None, no_decay=(), lr_scales=None, state=None,
               extra=lambda: {}, epoch_base: int = 0):
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
                                    no_decay=no_decay, lr_scales=lr_scales, amp=cfg.amp, progress=self.progress,
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

    def _restore_model_and_state(self) -> PhaseState:
        """Load the checkpoint's model state (into the cut model after `cut`) and return its phase state."""
        self.s.model.load_state_dict(self.resume["model"])
        return self.resume["state"]

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
