"""Dense models for `compare.py`: trained once per seed and cached, so that every method starts from the
same weights; and each channel's single-channel ablation loss on the held-out split."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from catalyst_deploy.inputs.models import load_model, save_model
from catalyst_deploy.run.train import PhaseSettings, evaluate, train_phase
from catalyst_deploy.inputs.zoo import small_resnet


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

    def ablation(self, args) -> list[float]:
        """Each global channel's single-channel ablation loss on the held-out split (cached beside the model)."""
        path = self.path.with_suffix(".ablation.json")
        if not path.is_file():
            path.write_text(json.dumps(ablation_losses(self.path, args)))
        return json.loads(path.read_text())


def ablation_losses(model_path: Path, args, images: int = 2048) -> list[float]:
    """Validation loss increase when one channel's producer slices (BN scale and shift, or the rows of a conv
    without BN) are zeroed, for every global channel of the channel graph, one at a time."""
    from catalyst_deploy.inputs.data import load_dataset
    from catalyst_deploy.surgery.graph import ChannelGraph

    model = load_model(str(model_path)).eval()
    splits = load_dataset(args.data, val_size=5000)
    x = torch.stack([splits.val[i][0] for i in range(min(images, len(splits.val)))])
    y = torch.tensor([splits.val[i][1] for i in range(len(x))])
    graph = ChannelGraph(model, x[:1])
    slices = graph.producer_slices(skip_normalized=True)
    loss = nn.CrossEntropyLoss()
    with torch.no_grad():
        base = float(loss(model(x), y))
        out = []
        for channel in range(graph.num_channels):
            saved = [(sl, sl.pos[sl.chan == channel]) for sl in slices if (sl.chan == channel).any()]
            backup = [sl.param.index_select(sl.dim, pos).clone() for sl, pos in saved]
            for sl, pos in saved:
                sl.param.index_fill_(sl.dim, pos, 0.0)
            out.append(round(float(loss(model(x), y)) - base, 6))
            for (sl, pos), old in zip(saved, backup):
                sl.param.index_copy_(sl.dim, pos, old)
    return out


def dense_models(args, widths: tuple[int, ...] = (32, 64, 128)) -> dict[int, DenseModel]:
    """compare.py's dense small ResNets of `widths` by seed (trained and cached first when missing), on the
    training split minus the held-out validation images."""
    from catalyst_deploy.inputs.data import load_dataset, make_loaders

    splits = load_dataset(args.data, val_size=5000, train_limit=2000 if args.quick else None,
                          test_limit=500 if args.quick else None)
    recipe = DenseRecipe(tuple(widths), 1.0 if args.quick else 10.0, 0.1, 0.9, 5e-4, 128, 8 if args.quick else None,
                         2000 if args.quick else None, args.data, val_size=5000)
    dense_seed = getattr(args, "dense_seed", None)  # compare.py final --dense-seed: every seed starts from that one
    seeds = sorted((set(args.seeds) if dense_seed is None else {dense_seed}) | {0})
    return {seed: cached_dense_model(recipe, seed, make_loaders(splits, 128, seed=seed), torch.device("cpu"),
                                     args.cache) for seed in seeds}


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

    def done(self) -> bool:
        return False


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
    random.seed(seed)
    torch.manual_seed(seed)
    train_loader, test_loader = loaders
    model = small_resnet(in_channels=1, num_classes=10, widths=recipe.widths).to(device)
    per_epoch = min(len(train_loader), recipe.steps_per_epoch or len(train_loader))
    settings = PhaseSettings(int(round(recipe.epochs * per_epoch)), recipe.lr, recipe.momentum, recipe.weight_decay)
    hooks = EpochEvaluator(model, test_loader, device, per_epoch)
    stats = train_phase(model, train_loader, device, settings, label=f"dense seed {seed}", hooks=hooks)
    curve = hooks.curve
    if not curve or stats.steps % per_epoch:  # a fractional last epoch: evaluate the end state too
        curve = curve + [round(evaluate(model, test_loader, device), 2)]
    return model, curve, stats.seconds
