"""Dense models for `compare.py`: trained once per seed and cached, so that every method starts from the
same weights; plus the probe that times a training epoch and an evaluation before the run is planned."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from catalyst_deploy.models import load_model, save_model
from catalyst_deploy.train import PhaseSettings, evaluate, train_phase
from catalyst_deploy.zoo import small_resnet


@dataclass(frozen=True)
class DenseRecipe:
    """How a dense model is trained (everything that changes the weights is in the cache key)."""

    widths: tuple[int, ...]
    epochs: float
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    steps_per_epoch: int | None
    train_limit: int | None
    data: str
    val_size: int = 0  # training images held out (never trained on) for choosing hyperparameters

    def cache_name(self, seed: int) -> str:
        limit = self.train_limit or "all"
        steps = f"_spe{self.steps_per_epoch}" if self.steps_per_epoch else ""
        val = f"_val{self.val_size}" if self.val_size else ""
        data = Path(self.data.split(":", 1)[-1]).name or self.data
        return (f"dense_{data}_w{'-'.join(map(str, self.widths))}_e{self.epochs:g}_lr{self.lr:g}_wd{self.weight_decay:g}"
                f"_b{self.batch_size}_n{limit}{val}{steps}_s{seed}")


@dataclass
class DenseModel:
    """A cached dense model: its file (a `--model` spec), test accuracy and per-epoch accuracy curve."""

    path: Path
    seed: int
    accuracy: float
    curve: list[float]
    train_seconds: float
    cached: bool = False


class EpochEvaluator:
    """Training-loop hooks that evaluate on the test set at the end of every epoch (the convergence curve)."""

    def __init__(self, model: nn.Module, test_loader, device: torch.device, steps_per_epoch: int):
        self.model, self.test_loader, self.device = model, test_loader, device
        self.steps_per_epoch, self.curve = steps_per_epoch, []

    def before_step(self) -> None: ...

    def after_step(self, lr: float, step: int) -> None:
        if step % self.steps_per_epoch == 0:
            self.curve.append(round(evaluate(self.model, self.test_loader, self.device), 2))
            self.model.train()

    def status(self) -> dict:
        return {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def cached_dense_model(recipe: DenseRecipe, seed: int, loaders, device: torch.device, cache: Path,
                       log=print) -> DenseModel:
    """The dense model of `seed` from `cache`, trained (and cached) first when it is not there."""
    path = cache / f"{recipe.cache_name(seed)}.pt"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log(f"dense model seed {seed}: cached {path.name} ({meta['accuracy']:.2f}%)")
        return DenseModel(path, seed, meta["accuracy"], meta["curve"], meta["train_seconds"], cached=True)
    cache.mkdir(parents=True, exist_ok=True)
    model, curve, seconds = train_dense(recipe, seed, loaders, device)
    save_model(model.cpu().eval(), path)
    meta = {"seed": seed, "accuracy": curve[-1], "curve": curve, "train_seconds": round(seconds, 1),
            "recipe": asdict(recipe)}
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"dense model seed {seed}: {curve[-1]:.2f}% after {recipe.epochs:g} epochs ({seconds / 60:.1f} min); "
        f"per epoch: {curve}")
    return DenseModel(path, seed, curve[-1], curve, seconds)


def train_dense(recipe: DenseRecipe, seed: int, loaders, device: torch.device) -> tuple[nn.Module, list[float], float]:
    """A fresh small ResNet trained with SGD and one cosine schedule; returns it, the test accuracy after
    each epoch (and at the end), and the seconds it took."""
    seed_everything(seed)
    train_loader, test_loader = loaders
    model = small_resnet(in_channels=1, num_classes=10, widths=recipe.widths).to(device)
    per_epoch = min(len(train_loader), recipe.steps_per_epoch or len(train_loader))
    settings = PhaseSettings(recipe.epochs, recipe.lr, recipe.momentum, recipe.weight_decay, recipe.steps_per_epoch)
    hooks = EpochEvaluator(model, test_loader, device, per_epoch)
    stats = train_phase(model, train_loader, device, settings, label=f"dense seed {seed}", hooks=hooks)
    curve = hooks.curve
    if not curve or stats.steps % per_epoch:  # a fractional last epoch: evaluate the end state too
        curve = curve + [round(evaluate(model, test_loader, device), 2)]
    return model, curve, stats.seconds


def load_dense(dense: DenseModel) -> nn.Module:
    """The cached dense module, on the CPU in eval mode."""
    return load_model(str(dense.path))


def time_training(widths: tuple[int, ...], loaders, device: torch.device, steps: int = 12,
                  eval_batches: int = 8) -> tuple[float, float]:
    """Seconds per training step and per evaluation batch of a fresh small ResNet on these loaders
    (after one warm-up step; at most one epoch of steps): the unit costs the run's budget is planned with."""
    train_loader, test_loader = loaders
    model = small_resnet(in_channels=1, num_classes=10, widths=widths).to(device)
    steps = min(steps, len(train_loader))
    train_phase(model, train_loader, device, PhaseSettings(epochs=1 / len(train_loader), lr=0.01), label="warmup")
    stats = train_phase(model, train_loader, device, PhaseSettings(epochs=steps / len(train_loader), lr=0.01),
                        label="probe")
    step_s = stats.seconds / max(stats.steps, 1)
    batches = min(eval_batches, len(test_loader))
    start = time.perf_counter()
    evaluate(model, test_loader, device, max_batches=batches)
    return step_s, (time.perf_counter() - start) / max(batches, 1)
