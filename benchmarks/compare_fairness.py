"""The fair-chance experiment of `compare.py` (DESIGN.md §2.3 P2): does a method prune a channel because
of what it does, or because of how large its weights happen to be?

Half of the channels of every group are rescaled by k without changing the function (every conv that
produces them and feeds a BatchNorm is scaled by k; the BN's running statistics follow). A magnitude-fair
method prunes the same share of the rescaled channels as of the untouched ones.

Two settings, both reported:
  held       the conv weights do not train during the phase (BN, head and the method's own variables
             do): isolates the method's decision rule.
  trainable  everything trains. A conv before a BN is scale-invariant, so SGD gives a channel scaled
             by k an effective learning rate scaled by 1/k^2: its training trajectory changes whatever
             the method, which biases k = 0.1 for every method that trains.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from catalyst_deploy.catalyst import CatalystRegularizer, TargetController, make_method
from catalyst_deploy.config import PruneConfig
from catalyst_deploy.pipeline import PhaseHooks
from catalyst_deploy.surgery import ChannelGraph, count_macs
from catalyst_deploy.train import PhaseSettings, evaluate, phase_steps, train_phase

SETTINGS = ("held", "trainable")
RESCALED, UNTOUCHED, NOT_ELIGIBLE = 1, 0, -1


@dataclass
class FairnessRecord:
    """Share of channels pruned among the rescaled ones and among the untouched ones, for one run."""

    method: str
    factor: float
    setting: str
    seed: int
    share_rescaled: float
    share_untouched: float
    channels_rescaled: int
    channels_untouched: int

    @property
    def gap(self) -> float:
        """Share pruned among rescaled minus among untouched, in points (0: fair)."""
        return 100.0 * (self.share_rescaled - self.share_untouched)

    def to_dict(self) -> dict:
        return {**asdict(self), "gap_points": round(self.gap, 2)}


def bn_after(graph: ChannelGraph, module: nn.Module) -> nn.BatchNorm2d | None:
    """The BatchNorm that is the only consumer of `module`'s output in the traced graph, if any."""
    node = graph.dg.module2node.get(module)
    if node is None or len(node.outputs) != 1:
        return None
    consumer = node.outputs[0].module
    return consumer if isinstance(consumer, nn.BatchNorm2d) else None


def rescale_half_of_each_group(model: nn.Module, example: torch.Tensor, factor: float, seed: int) -> torch.Tensor:
    """Multiply a random half of the channels of every channel group by `factor`, function-preserving.

    Every conv that produces a chosen channel and feeds a BatchNorm gets its output row scaled; that
    BN's running mean and variance are scaled by `factor` and `factor`^2, so eval-mode outputs change
    only through BN's epsilon. Returns one code per global channel of `ChannelGraph(model, example)`:
    1 rescaled, 0 untouched, -1 not eligible (a group with a producer that does not feed a BN).
    """
    graph = ChannelGraph(model, example)
    gen = torch.Generator().manual_seed(seed)
    code = torch.full((graph.num_channels,), NOT_ELIGIBLE)
    for g, group in enumerate(graph.groups):
        producers = _bn_fed_producers(graph, group)
        if producers is None:
            continue
        size = graph.sizes[g]
        chosen = set(torch.randperm(size, generator=gen)[: size // 2].tolist())
        for conv, bn, rows in producers:
            picked = torch.tensor([pos for pos, root in rows if root in chosen], dtype=torch.long)
            with torch.no_grad():  # (outside: the graph tracing above needs autograd)
                conv.weight[picked] *= factor
                bn.running_mean[picked] *= factor
                bn.running_var[picked] *= factor ** 2
        code[graph.offsets[g]:graph.offsets[g + 1]] = UNTOUCHED
        code[graph.offsets[g] + torch.tensor(sorted(chosen), dtype=torch.long)] = RESCALED
    return code


def _bn_fed_producers(graph: ChannelGraph, group) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, list]] | None:
    """(conv, its BN, [(row, root channel)]) for every conv producing the group's channels; None when a
    producing conv does not feed a BN (rescaling it would change the function)."""
    producers = []
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, nn.Conv2d) or not graph.dg.is_out_channel_pruning_fn(item.dep.handler):
            continue
        bn = bn_after(graph, module)
        if bn is None:
            return None
        producers.append((module, bn, [(int(p), int(r)) for p, r in zip(item.idxs, item.root_idxs)]))
    return producers or None


def hold_conv_weights(model: nn.Module) -> None:
    """Freeze every conv weight (the optimizer then skips them: no update, no weight decay)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.requires_grad_(False)


def decided_prune_mask(model: nn.Module, cfg: PruneConfig, loaders, example: torch.Tensor, epochs: float,
                       device: torch.device, hold_convs: bool = False) -> torch.Tensor:
    """Run `cfg.method`'s regularized phase for `epochs` on `model` (conv weights frozen with `hold_convs`)
    and return the prune mask it decides for `cfg.target_flops` (Catalyst: the controller's frozen set;
    others: their ranking), without rounding, so that the shares compare decisions, not rounding."""
    graph = ChannelGraph(model, example)
    macs_dense = count_macs(model, example)[0]
    target_macs = cfg.target.macs(macs_dense)
    method = make_method(cfg.method, seed=cfg.seed, catalyst=cfg.catalyst)
    method.start(graph)
    if hold_convs:  # only now: torch-pruning traces the graph through autograd, frozen convs would vanish from it
        hold_conv_weights(model)
    settings = PhaseSettings(epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.steps_per_epoch)
    controller = None
    if isinstance(method, CatalystRegularizer):
        controller = TargetController(method, graph, macs_dense, target_macs, cfg.catalyst,
                                      phase_steps(settings, len(loaders[0])), cfg.lr, None, cfg.max_layer_ratio)
    if phase_steps(settings, len(loaders[0])):
        train_phase(model, loaders[0], device, settings, label=f"fairness {cfg.method}",
                    hooks=PhaseHooks(method, controller, 0), no_decay=method.regularized_params(), amp=cfg.amp)
    if controller is not None:
        return controller.frozen_mask if controller.frozen else controller.freeze(-1, forced=True)
    return graph.select_to_target(method.scores(), target_macs, None, cfg.max_layer_ratio)


def fairness_record(rescaled: nn.Module, code: torch.Tensor, cfg: PruneConfig, setting: str, factor: float,
                    loaders, example: torch.Tensor, epochs: float, device: torch.device) -> FairnessRecord:
    """One method (`cfg.method`), one factor, one setting ("held" or "trainable"), on a copy of the
    `rescaled` model: the shares pruned among its rescaled and untouched channels (`code`)."""
    model = copy.deepcopy(rescaled).to(device)
    torch.manual_seed(cfg.seed)
    mask = decided_prune_mask(model, cfg, loaders, example.to(device), epochs, device, setting == "held").cpu()
    return FairnessRecord(cfg.method, factor, setting, cfg.seed,
                          share_rescaled=float(mask[code == RESCALED].float().mean()),
                          share_untouched=float(mask[code == UNTOUCHED].float().mean()),
                          channels_rescaled=int((code == RESCALED).sum()),
                          channels_untouched=int((code == UNTOUCHED).sum()))


def rescaled_copy(dense: nn.Module, example: torch.Tensor, factor: float, seed: int, test_loader,
                  device: torch.device) -> tuple[nn.Module, torch.Tensor, float]:
    """A rescaled copy of `dense`, its channel codes, and its test accuracy (the function check)."""
    model = copy.deepcopy(dense).cpu().eval()
    code = rescale_half_of_each_group(model, example.cpu(), factor, seed)
    accuracy = evaluate(model.to(device), test_loader, device)
    return model, code, accuracy
