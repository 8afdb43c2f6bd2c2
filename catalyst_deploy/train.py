"""Fine-tuning loop shared by every phase: dense pre-training (demo), regularized phase, recovery.

CUDA when available (AMP in bf16, or fp16 with a grad scaler; channels_last), CPU otherwise. SGD with
momentum and a cosine learning rate per phase. A `StepHooks` object sees every step: the pruning method
adds penalties before the optimizer step and proximal updates after it, with the learning rate used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import torch
from torch import nn


class StepHooks(Protocol):
    def before_step(self) -> None: ...
    def after_step(self, lr: float, step: int) -> None: ...
    def status(self) -> dict: ...


@dataclass(frozen=True)
class PhaseSettings:
    epochs: float
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    steps_per_epoch: int | None = None  # cap (quick runs); None = the whole loader


@dataclass
class PhaseStats:
    steps: int
    seconds: float
    train_loss: float
    train_acc: float


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
    """Top-1 accuracy in percent on `loader`."""
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
    return 100.0 * correct / max(total, 1)


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def phase_steps(settings: PhaseSettings, loader_len: int) -> int:
    per_epoch = min(loader_len, settings.steps_per_epoch or loader_len)
    return max(0, int(round(settings.epochs * per_epoch)))


def make_optimizer(model: nn.Module, settings: PhaseSettings, no_decay: Iterable[nn.Parameter] = ()) -> torch.optim.SGD:
    """SGD with momentum; parameters in `no_decay` train without weight decay."""
    skip = {id(p) for p in no_decay}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in skip], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
    ]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=settings.lr, momentum=settings.momentum)


def train_phase(model: nn.Module, loader: Iterable, device: torch.device, settings: PhaseSettings, *,
                label: str, hooks: StepHooks | None = None, no_decay: Iterable[nn.Parameter] = (),
                amp: bool = True, progress: Callable | None = None) -> PhaseStats:
    """Train `model` for `settings.epochs` over `loader` with a cosine LR; returns loss/accuracy/time.

    `progress(label, total)` returns a callable `update(advance, **fields)` (see cli progress); None = silent.
    """
    total = phase_steps(settings, len(loader))
    optimizer = make_optimizer(model, settings, no_decay)
    dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    update = progress(label, total) if progress else None
    step, loss_sum, correct, seen, start = 0, 0.0, 0, 0, time.perf_counter()
    model.train()
    while step < total:
        for x, y in loader:
            if step >= total:
                break
            lr = cosine_lr(settings.lr, step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
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
            step += 1
            if hooks:
                hooks.after_step(lr, step)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if update:
                update(1, loss=loss_sum / seen, acc=100.0 * correct / seen, **(hooks.status() if hooks else {}))
    return PhaseStats(step, time.perf_counter() - start, loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1))
