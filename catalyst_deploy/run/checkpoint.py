"""Checkpoints of a prune run, so that a killed or interrupted run continues where it stopped.

One file, `checkpoints/last.pt` in the run folder, written atomically at an interval and at every phase
end: the phase and its step, the model's state (and, once cut, the mask the plan is made from again), the
optimizer, the method's state (`PruningMethod.state_dict`), the RNG states, the partial report, and a hash of
the settings that decide the result, all as tensors and plain containers. It is read with
`torch.load(weights_only=True)`: a crafted file runs no code, and one that is not what `save` writes is refused.
`prune --resume OUT` refuses a checkpoint made with other settings, naming the keys that differ; one it
accepts becomes a `resume.Resume`, the phase and step the run continues at and the one restore of its states.
SIGINT and SIGTERM save a checkpoint at the next step boundary and stop with a one-line message.
Under torchrun only rank 0 saves (`enabled`); the checkpoint records the number of processes, and a resume
with another number is refused (the per-rank batch and the data shards depend on it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import signal
from contextlib import contextmanager
from collections.abc import Iterator

from catalyst_deploy.errors import Interrupted, UsageError  # noqa: F401 (Interrupted re-exported)
from catalyst_deploy.run.rundir import CHECKPOINTS, RunFolder

CHECKPOINT = f"{CHECKPOINTS}/last.pt"
PHASES = ("pretrain", "regularize", "recover", "trained")  # the phases a checkpoint is written in, in order
# settings that do not change what a run computes: they may differ on --resume
NOT_DECIDING = {"out", "overwrite", "resume", "threads", "workers", "checkpoint_every", "export", "bench",
                "record_every"}


def deciding_settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_DECIDING}


def settings_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(deciding_settings(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def payload_problem(payload) -> str | None:
    """What a loaded checkpoint lacks of what `Checkpointer.save` writes, or None."""
    import torch

    if not isinstance(payload, dict):
        return "not a mapping"
    state, model, rng = payload.get("state"), payload.get("model"), payload.get("rng")
    if payload.get("phase") not in PHASES:
        return "no phase it knows"
    if not (isinstance(state, dict) and set(state) == {"step", "optimizer"} and isinstance(state["step"], int)
            and state["step"] >= 0 and isinstance(state["optimizer"], (dict, type(None)))):
        return "no phase state"
    if not (isinstance(model, dict) and all(isinstance(v, torch.Tensor) for v in model.values())):
        return "no model state dict"
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor) and isinstance(rng.get("python"), tuple)):
        return "no random-number state"
    if not isinstance(payload.get("report"), dict):
        return "no report"
    mask = payload.get("mask")
    if payload["phase"] in ("recover", "trained") and not (isinstance(mask, list) and mask
                                                          and all(isinstance(m, bool) for m in mask)):
        return "no prune mask after the cut"
    if payload["phase"] == "regularize" and not isinstance(payload.get("method"), dict):
        return "no method state"
    return None


class Checkpointer:
    """Saves and loads the run's checkpoint through its RunFolder; watches SIGINT/SIGTERM. `enabled`: whether
    `save` writes (rank 0 only under torchrun); `world_size`: the number of processes of this run."""

    def __init__(self, folder: RunFolder, config: dict, enabled: bool = True, world_size: int = 1):
        self.folder, self.config, self.enabled, self.world_size = folder, config, enabled, world_size
        self.hash = settings_hash(config)
        self.stop_requested: str | None = None
        self.carried: dict = {}

    def carry(self, **values) -> None:
        """Put `values` into every later checkpoint (after the cut: the mask, which a resume needs to cut the
        dense model again before it loads the pruned weights)."""
        self.carried.update(values)

    def save(self, payload: dict) -> None:
        from catalyst_deploy.atomic import torch_save_file

        if not self.enabled:
            return
        state = payload.get("state")
        if dataclasses.is_dataclass(state):  # plain containers only: the file is read with weights_only=True
            payload = {**payload, "state": dataclasses.asdict(state)}
        payload = {**self.carried, **payload, "settings_hash": self.hash, "settings": deciding_settings(self.config),
                   "rng": rng_state(), "world_size": self.world_size}
        self.folder.write_with(CHECKPOINT, lambda tmp: torch_save_file(payload, tmp, self.folder.file(CHECKPOINT)))

    def load(self) -> dict:
        """The checkpoint of the run being resumed, read with `weights_only=True` (state dicts, tensors, plain
        containers: a crafted file runs no code); UsageError when it is missing, not such a file, made with other
        settings or by another number of processes."""
        import torch

        from catalyst_deploy.run.train import PhaseState

        path = self.folder.file(CHECKPOINT)
        if not path.is_file() or path.is_symlink():
            raise UsageError(f"--resume: {self.folder.path} has no checkpoint to continue from")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, not a torch file, or holding objects only a full unpickle builds
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise UsageError(f"--resume: {path} is not a checkpoint this tool can read ({first}); it is never "
                             "unpickled in full, which could run code from it: start over with --overwrite") from None
        problem = payload_problem(payload)
        if problem:
            raise UsageError(f"--resume: {path} is not a checkpoint this tool wrote ({problem}): start over with "
                             "--overwrite")
        payload["state"] = PhaseState(**payload["state"])
        if payload.get("settings_hash") != self.hash:
            theirs, ours = payload.get("settings", {}), deciding_settings(self.config)
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise UsageError(f"--resume: the run in {self.folder.path} was made with other settings "
                             f"({', '.join(differ[:6]) or 'unknown'} differ): pass the same settings, or --overwrite")
        saved = payload.get("world_size", 1)  # checkpoints from before torchrun support: one process
        if saved != self.world_size:
            raise UsageError(f"--resume: the run in {self.folder.path} was made by {saved} process(es) and this one has "
                             f"{self.world_size}: resume with {saved} (torchrun --nproc-per-node/--nnodes), since the "
                             "global batch and each rank's share of the data depend on it, or start over with --overwrite")
        return payload

    def check_stop(self, save) -> None:
        """After a step: if a stop signal came, `save()` a checkpoint and raise Interrupted."""
        if self.stop_requested:
            save()
            raise Interrupted(f"{self.stop_requested}: checkpoint saved; continue with "
                              f"`catalyst-deploy prune ... --out {self.folder.path} --resume`",
                              self.stop_requested if self.stop_requested.startswith("SIG") else "SIGINT")

    @contextmanager
    def watching_signals(self) -> Iterator[None]:
        def request(signum, _frame):
            self.stop_requested = signal.Signals(signum).name

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request)
            except ValueError:  # not the main thread (e.g. a test runner's worker): no handler
                pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
