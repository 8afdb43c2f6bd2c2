"""The fine-tuning loop shared by every phase: dense pre-training, the regularized phase, recovery.

CUDA when available (AMP in bf16, or fp16 with a grad scaler; channels_last), CPU otherwise. SGD with
momentum; a cosine (or constant) learning rate over the phase. A `StepHooks` object sees every step (the
pruning method adds penalties before the optimizer step and proximal updates after it) and may end the phase
early; a pruning method is one. Every phase can be checkpointed and continued at any step: the shuffling and
each item's augmentation are functions of (seed, epoch, item) only (`inputs.sampling`), and the checkpoint
carries the optimizer and RNG states.

Under torchrun the model given to `train_phase` is wrapped in DDP and the loader holds this rank's share of
every epoch: a step sees the global batch (per-rank batch x world size), whose mean gradient DDP gives
every rank. The learning rate is used as given, for that global batch: nothing scales it with the number
of processes. `evaluate` sums its counts over the ranks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from collections.abc import Callable, Iterable

import torch
from torch import nn

from catalyst_deploy.run.distributed import all_reduce_sum
from catalyst_deploy.errors import CatalystDeployError

if TYPE_CHECKING:
    from catalyst_deploy.methods.base import ParamOverride


class DivergenceError(CatalystDeployError):
    """A non-finite loss or weight: the run stops, and nothing is written from the diverged model."""


class StepHooks(Protocol):
    def before_step(self) -> None: ...
    def after_step(self, lr: float, step: int) -> None: ...
    def status(self) -> dict: ...
    def done(self) -> bool: ...


@dataclass(frozen=True)
class PhaseSettings:
    """A phase's optimizer steps and SGD settings; `lr` is for the global batch (never scaled per rank)."""

    steps: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # or "constant"


@dataclass
class PhaseStats:
    steps: int
    seconds: float
    train_loss: float
    train_acc: float


@dataclass
class PhaseState:
    """Where a phase stands: what a checkpoint needs to continue it."""

    step: int
    optimizer: dict | None = None


def phase_steps(epochs: float, loader_len: int, steps_per_epoch: int | None = None) -> int:
    per_epoch = min(loader_len, steps_per_epoch or loader_len)
    return max(0, int(round(epochs * per_epoch)))


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda'/'cuda:N'/'cpu' as given (UsageError if unavailable)."""
    from catalyst_deploy.errors import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, fp16 otherwise, None (fp32) on CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp: bool = True,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy in percent on `loader`; under torchrun, over the loaders of every rank (each rank passes
    its share; the counts are summed, so every rank returns the same number)."""
    model.eval()
    dtype = amp_dtype(device, amp)
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    correct, total = all_reduce_sum(correct, total)
    return 100.0 * correct / max(total, 1)


def scheduled_lr(settings: PhaseSettings, step: int) -> float:
    if settings.schedule == "constant":
        return settings.lr
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * min(step, settings.steps) / max(settings.steps, 1)))


def make_optimizer(model: nn.Module, settings: PhaseSettings,
                   overrides: Iterable[ParamOverride] = ()) -> torch.optim.SGD:
    """SGD with momentum over the trainable parameters of `model`; `overrides` (a method's
    `param_overrides()`) give some of them their own learning-rate multiple and weight decay."""
    own: dict[int, tuple[float, float]] = {}
    for override in overrides:
        decay = settings.weight_decay if override.weight_decay is None else override.weight_decay
        own.update({id(p): (decay, override.lr_scale) for p in override.params})
    groups: dict[tuple[float, float], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(own.get(id(p), (settings.weight_decay, 1.0)), []).append(p)
    return torch.optim.SGD([{"params": ps, "weight_decay": wd, "lr_scale": scale} for (wd, scale), ps in groups.items()],
                           lr=settings.lr, momentum=settings.momentum)


def train_phase(model: nn.Module, loader, device: torch.device, settings: PhaseSettings, *, label: str,
                hooks: StepHooks | None = None, overrides: Iterable[ParamOverride] = (), amp: bool = True,
                progress: Callable | None = None, state: PhaseState | None = None,
                checkpoint: Callable[[PhaseState], None] | None = None, checkpoint_every: int = 0,
                epoch_base: int = 0) -> PhaseStats:
    """Train `model` for `settings.steps` optimizer steps over `loader` (whose sampler has `set_epoch`).

    `state` continues a checkpointed phase at its step; `checkpoint(state)` is called every
    `checkpoint_every` steps and at the end. `epoch_base` offsets the shuffling so that phases do not
    repeat each other's order. `progress(label, total)` returns `update(advance, **fields)`.
    Raises DivergenceError at the first non-finite loss.
    """
    optimizer = make_optimizer(model, settings, overrides)
    step = 0
    if state is not None:
        step = state.step
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
    dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    update = progress(label, settings.steps) if progress else None
    if update and step:
        update(step)
    per_epoch = len(loader)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    model.train()
    while step < settings.steps and not (hooks and hooks.done()):
        epoch, skip = divmod(step, per_epoch)
        for x, y in _epoch_batches(loader, epoch_base + epoch, skip):
            lr = scheduled_lr(settings, step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, logits, y = _step(model, optimizer, scaler, loss_fn, x, y, device, dtype, hooks)
            step += 1
            if not math.isfinite(loss):
                raise DivergenceError(f"{label}: the loss became {loss} at step {step} (learning rate {lr:g})")
            if hooks:
                hooks.after_step(lr, step)
            loss_sum += loss * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if update:
                update(1, loss=loss_sum / seen, acc=100.0 * correct / seen, **(hooks.status() if hooks else {}))
            if checkpoint and checkpoint_every and step % checkpoint_every == 0 and step < settings.steps:
                checkpoint(PhaseState(step, optimizer.state_dict()))
            if step >= settings.steps or (hooks and hooks.done()):
                break
    if checkpoint:
        checkpoint(PhaseState(step, optimizer.state_dict()))
    return PhaseStats(step, time.perf_counter() - start, loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1))


def _epoch_batches(loader, epoch: int, skip_batches: int):
    """The batches of one epoch (shuffled as a function of the epoch), the first `skip_batches` skipped
    without being loaded."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if hasattr(sampler, "skip"):
        sampler.skip = skip_batches * loader.batch_size
        return iter(loader)
    iterator = iter(loader)
    for _ in range(skip_batches):
        next(iterator, None)
    return iterator


def _step(model, optimizer, scaler, loss_fn, x, y, device, dtype, hooks):
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)
        loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if hooks:
        scaler.unscale_(optimizer)
        hooks.before_step()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), logits.detach(), y
