"""The `prune` pipeline, one method per step (DESIGN.md §1):

    setup -> (dense pre-training) -> regularized phase -> cut -> recovery -> outputs

`PruneRun(cfg).run(stage_dir)` returns the report dict; `api.prune` wraps it with a staging folder so
that a failed run leaves nothing half-written at `--out`.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from catalyst_deploy.catalyst import CatalystRegularizer, PruningMethod, TargetController, make_method
from catalyst_deploy.config import PruneConfig
from catalyst_deploy.report import bifurcation_margin, write_report
from catalyst_deploy.surgery import ChannelGraph, apply_plan, count_macs, save_plan
from catalyst_deploy.train import PhaseSettings, evaluate, phase_steps, resolve_device, to_device, train_phase


@dataclass
class Setup:
    model: nn.Module
    train_loader: object
    test_loader: object
    example: torch.Tensor
    device: torch.device


class PhaseHooks:
    """Connects the training loop to a pruning method (and Catalyst's target controller)."""

    def __init__(self, method: PruningMethod, controller: TargetController | None, record_every: int):
        self.method, self.controller, self.record_every = method, controller, record_every
        self.trajectory: list[tuple[int, list[float]]] = []

    def before_step(self) -> None:
        self.method.before_step()

    def after_step(self, lr: float, step: int) -> None:
        self.method.after_step(lr)
        if self.controller is not None:
            self.controller.on_step(step)
        if self.record_every and step % self.record_every == 0 and isinstance(self.method, CatalystRegularizer):
            self.trajectory.append((step, self.method.ratio().cpu().tolist()))

    def status(self) -> dict:
        if self.controller is None:
            return {}
        return {"flops": self.controller.current_ratio, "lam": self.method.lam}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class PruneRun:
    """One `prune` run. `progress(label, total)` -> update(advance, **fields); `log(msg)` prints a line."""

    def __init__(self, cfg: PruneConfig, progress: Callable | None = None, log: Callable[[str], None] = print):
        self.cfg, self.progress, self.log = cfg, progress, log
        self.report: dict = {"config": _jsonable(cfg), "accuracy": {}, "seconds": {}}

    # ---- steps -----------------------------------------------------------------------------------
    def setup(self) -> Setup:
        from catalyst_deploy.data import load_dataset, make_loaders
        from catalyst_deploy.models import load_model, model_input_channels

        cfg = self.cfg
        seed_everything(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)  # on a shared CPU, fewer threads than cores can be much faster
        device = resolve_device(cfg.device)
        size = tuple(cfg.input_shape[2:]) if cfg.input_shape else None
        splits = load_dataset(cfg.data, image_size=size, train_limit=cfg.train_limit, test_limit=cfg.test_limit)
        info = splits.info

        model = load_model(cfg.model, weights=cfg.weights, trust_pickle=cfg.trust_pickle,
                           num_classes=info.num_classes, in_channels=info.channels)
        channels = model_input_channels(model) or info.channels
        if channels != info.channels:
            self.log(f"data has {info.channels} channel(s), the model wants {channels}: converting the images")
            splits = load_dataset(cfg.data, image_size=size, channels=channels,
                                  train_limit=cfg.train_limit, test_limit=cfg.test_limit)
        train_loader, test_loader = make_loaders(splits, cfg.batch_size, cfg.workers, cfg.seed)
        shape = cfg.input_shape or (1, channels, *splits.info.image_size)
        example = torch.randn(1, *shape[1:], device=device)
        return Setup(to_device(model, device), train_loader, test_loader, example, device)

    def phase(self, s: Setup, label: str, epochs: float, lr: float, hooks=None, no_decay=()) -> None:
        cfg = self.cfg
        settings = PhaseSettings(epochs, lr, cfg.momentum, cfg.weight_decay, cfg.steps_per_epoch)
        if phase_steps(settings, len(s.train_loader)) == 0:
            self.report["seconds"][label] = 0.0
            return
        stats = train_phase(s.model, s.train_loader, s.device, settings, label=label, hooks=hooks,
                            no_decay=no_decay, amp=cfg.amp, progress=self.progress)
        self.report["seconds"][label] = round(stats.seconds, 2)

    def accuracy(self, s: Setup, key: str) -> float:
        acc = evaluate(s.model, s.test_loader, s.device, self.cfg.amp)
        self.report["accuracy"][key] = round(acc, 3)
        self.log(f"accuracy {key.replace('_', ' ')}: {acc:.2f}%")
        return acc

    def regularize(self, s: Setup, graph: ChannelGraph, macs_dense: int) -> torch.Tensor:
        """The regularized phase; returns the global prune mask it decided on."""
        cfg = self.cfg
        target_macs = cfg.target.macs(macs_dense)
        method = make_method(cfg.method, seed=cfg.seed, catalyst=cfg.catalyst)
        method.start(graph)
        controller = None
        if isinstance(method, CatalystRegularizer):
            total = phase_steps(PhaseSettings(cfg.reg_epochs, cfg.lr, steps_per_epoch=cfg.steps_per_epoch),
                                len(s.train_loader))
            controller = TargetController(method, graph, macs_dense, target_macs, cfg.catalyst, total, cfg.lr,
                                          cfg.round_to, cfg.max_layer_ratio)
        hooks = PhaseHooks(method, controller, cfg.record_every)
        self.phase(s, f"regularize ({cfg.method})", cfg.reg_epochs, cfg.lr, hooks, method.regularized_params())
        if controller is not None:
            mask = controller.frozen_mask if controller.frozen else controller.freeze(-1, forced=True)
            self.report["catalyst"] = {**controller.state(), **method.state(),
                                       "frozen_at_zero": method.frozen_at_zero()}
            self.report["log_c_at_cut"] = _finite(method.log_ratio().cpu())
            self.report["log_c_at_freeze"] = _finite(controller.log_c_at_freeze)
            self.report["bifurcation_margin"] = bifurcation_margin(self.report["log_c_at_cut"], mask.tolist())
        else:
            mask = graph.select_to_target(method.scores(), target_macs, cfg.round_to, cfg.max_layer_ratio)
        self.report["pruned_channels"] = mask.nonzero().flatten().tolist()
        if hooks.trajectory:
            self.report["c_trajectory"] = [[step, _finite(torch.tensor(c).log())] for step, c in hooks.trajectory]
        return mask

    def cut(self, s: Setup, graph: ChannelGraph, mask: torch.Tensor) -> dict:
        plan = graph.plan_for(mask.cpu())
        apply_plan(s.model, plan)
        to_device(s.model, s.device)
        return plan

    # ---- the whole run ---------------------------------------------------------------------------
    def run(self, s: Setup, out) -> dict:
        """The pipeline on a loaded `Setup`, writing through `out` (a rundir.RunFolder)."""
        cfg, rep = self.cfg, self.report
        start = time.perf_counter()
        if cfg.pretrain_epochs:
            self.phase(s, "dense training", cfg.pretrain_epochs, cfg.pretrain_lr)
        macs0, params0 = count_macs(s.model, s.example)
        self.accuracy(s, "dense")
        dense = copy.deepcopy(s.model).cpu().eval() if cfg.export or cfg.bench else None
        graph = ChannelGraph(s.model, s.example, cfg.ignore)
        if cfg.latency_aware:
            graph.channel_weight = self.latency_weights(s, graph)
        mask = self.regularize(s, graph, macs0)
        self.accuracy(s, "after_regularization")
        plan = self.cut(s, graph, mask)
        macs1, params1 = count_macs(s.model, s.example)
        plan.update(macs_before=macs0, macs_after=macs1, params_before=params0, params_after=params1)
        self.accuracy(s, "after_surgery")
        self.phase(s, "recover", cfg.recover_epochs, cfg.lr)
        self.accuracy(s, "final")
        rep.update(macs={"dense": macs0, "pruned": macs1, "ratio": round(macs1 / macs0, 4)},
                   params={"dense": params0, "pruned": params1, "ratio": round(params1 / params0, 4)},
                   channels_removed=int(mask.sum()), channels_total=graph.num_channels,
                   input_shape=list(s.example.shape), device=str(s.device))
        self.write_outputs(s, plan, out)
        if cfg.export or cfg.bench:
            self.export_and_bench(s, dense, plan, out)
        rep["seconds"]["total"] = round(time.perf_counter() - start, 2)
        write_report(rep, out)
        return rep

    # ---- deployment steps ------------------------------------------------------------------------
    def latency_weights(self, s: Setup, graph: ChannelGraph) -> torch.Tensor:
        """Per-channel prune-priority weight: (group's measured ms per MAC / median) ** alpha on the
        `latency_aware` backend (ORT CPU profile of the dense model), so slow-per-MAC layers shrink first."""
        from catalyst_deploy.bench.layer_latency import conv_shapes, group_latency_per_mac, profile_conv_latency

        cpu_model, example = copy.deepcopy(s.model).cpu().eval(), s.example.cpu()
        per_mac = group_latency_per_mac(graph, conv_shapes(cpu_model, example), profile_conv_latency(cpu_model, example))
        weight = ((per_mac / per_mac.median()).clamp(min=1e-3) ** self.cfg.latency_alpha).float()
        self.report["latency_aware"] = {"backend": self.cfg.latency_aware, "alpha": self.cfg.latency_alpha,
                                        "group_weight": [round(float(w), 4) for w in weight]}
        return torch.repeat_interleave(weight, torch.tensor(graph.sizes))

    def export_and_bench(self, s: Setup, dense: nn.Module, plan: dict, out: Path) -> None:
        """Export the pruned model to each `--export` format (checked against PyTorch), then time dense
        vs pruned, interleaved, on the matching backends; the table goes into report.md."""
        from catalyst_deploy import api
        from catalyst_deploy.exporters import get_exporter

        pruned, example = s.model.cpu().eval(), s.example.cpu()
        exports = {}
        for fmt in self.cfg.export:
            name = f"model{get_exporter(fmt).suffix}"
            self.log(f"exporting {fmt} -> {name}")
            result = api.export(pruned, fmt, out.file(name), example=example, plan=plan if fmt == "torch" else None,
                                overwrite=True)
            out.record(name)
            if fmt == "torch":
                from catalyst_deploy.exporters.torch import torch_artifact_paths

                for path in torch_artifact_paths(out.file(name)).values():
                    out.record(path.name)
            exports[fmt] = {"path": name, "max_abs_diff": result.max_abs_diff, "atol": result.atol}
        self.report["exports"] = exports
        if self.cfg.bench:
            self.report["latency"] = self.bench(dense, pruned, example, out)

    def bench(self, dense: nn.Module, pruned: nn.Module, example: torch.Tensor, out: Path) -> dict:
        from catalyst_deploy import api
        from catalyst_deploy.bench.harness import BenchOptions
        from catalyst_deploy.bench.report import to_markdown

        backends = ["ort-cpu", "torch"]
        if torch.cuda.is_available():
            backends += ["ort-cuda"] + (["trt"] if "trt" in self.cfg.export else [])
        options = BenchOptions(backends=tuple(backends), batches=self.cfg.bench_batches,
                               input_shape=tuple(example.shape[1:]), flops_ratio=self.report["macs"]["ratio"])
        self.log(f"benchmarking dense vs pruned on {', '.join(backends)}, batch {list(self.cfg.bench_batches)}")
        report = api.bench(pruned, dense, options, out_dir=out.path)
        for name in ("bench.json", "bench.md", "latency.png"):
            out.record(name)
        self.report["latency_markdown"] = to_markdown(report)
        return {"ratios": report.ratios(), "bench_json": "bench.json"}

    def write_outputs(self, s: Setup, plan: dict, out: Path) -> None:
        from catalyst_deploy.report import write_bifurcation_png

        model = s.model.to("cpu").to(memory_format=torch.contiguous_format).eval()
        out.write_with("pruned.pt", lambda tmp: torch.save(model, tmp))
        out.write_with("pruned_state.pt", lambda tmp: torch.save(model.state_dict(), tmp))
        out.write_with("plan.json", lambda tmp: save_plan(plan, tmp))
        if "log_c_at_cut" in self.report:
            r = self.report
            out.write_with("bifurcation.png", lambda tmp: write_bifurcation_png(
                r["log_c_at_freeze"], r["log_c_at_cut"], r["pruned_channels"], tmp))


def _finite(log_c: torch.Tensor) -> list[float]:
    """log c with +-inf clipped to +-50 so that JSON can hold it (inf: F = 0, -inf: d = 0)."""
    return log_c.clamp(-50.0, 50.0).tolist()


def _jsonable(cfg: PruneConfig) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else (str(v) if isinstance(v, Path) else v)
    return out
