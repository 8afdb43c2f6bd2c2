"""The `prune` pipeline (docs/architecture.md has the data flow):

    setup + preflight -> (dense pre-training) -> regularized phase -> cut -> recovery -> outputs -> deploy

`PruneRun(cfg).setup()` loads and checks everything before the output folder is touched; `run(setup,
folder)` trains, checkpointing into the folder, and returns the `report.PruneReport`. Every method gets
the same optimizer steps in all: a method that decides early (Catalyst) cuts then and gives the steps it
did not use to the recovery.

Under torchrun every rank runs this same pipeline on its share of the training data (`distributed`): rank 0
logs, shows progress, reads the checkpoint for everyone and writes every file; the other ranks write nothing.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from collections.abc import Callable

import torch
from torch import nn

from catalyst_deploy.run import distributed
from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.run.checkpoint import Checkpointer
from catalyst_deploy.config import PruneConfig
from catalyst_deploy.surgery.graph import ChannelGraph
from catalyst_deploy.surgery.macs import count_macs
from catalyst_deploy.run.phases import PhaseRunner
from catalyst_deploy.run.resume import Resume
from catalyst_deploy.report import Counts, PruneReport


@dataclass
class Setup:
    model: nn.Module
    loaders: dict  # train, test, val (None without val_size)
    example: torch.Tensor
    device: torch.device
    info: object  # datasets.DatasetInfo
    graph: ChannelGraph
    budget: Budget
    macs: int
    params: int


class PruneRun:
    """One `prune` run. `progress(label, total)` -> update(advance, **fields); `log(msg)` prints a line (both
    only on rank 0 under torchrun)."""

    def __init__(self, cfg: PruneConfig, progress: Callable | None = None, log: Callable[[str], None] = print,
                 group_weight: torch.Tensor | None = None):
        if not distributed.is_main():  # one voice: the other ranks would repeat rank 0's lines
            progress, log = None, _quiet
        self.cfg, self.progress, self.log = cfg, progress, log
        self.report = PruneReport(config=config_json(cfg))
        self.group_weight = group_weight  # latency weights measured before (--target-latency reuses its search's)

    def setup(self) -> Setup:
        """Data, model, graph and budget, with every check that can run before training (`preflight`).
        Under torchrun it starts the process group first (`distributed.init`)."""
        from catalyst_deploy.run import preflight
        from catalyst_deploy.run.train import resolve_device

        cfg = self.cfg
        preflight.check_deployment(cfg)
        seed_everything(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = distributed.init(resolve_device(cfg.device), cfg.dist_timeout_s)
        with distributed.failure_boundary():
            check_sync_bn(cfg, device)
            return self._data_setup(device)

    def _data_setup(self, device: torch.device) -> Setup:
        """Data and model on `device`, each rank with its share of the training split and of the evaluated ones."""
        from catalyst_deploy.run import preflight
        from catalyst_deploy.inputs.data import load_dataset, make_loaders
        from catalyst_deploy.inputs.models import load_model, model_input_channels
        from catalyst_deploy.run.train import to_device

        cfg = self.cfg
        size = tuple(cfg.input_shape[2:]) if cfg.input_shape else None
        splits = load_dataset(cfg.data, image_size=size, train_limit=cfg.train_limit, test_limit=cfg.test_limit,
                              val_size=cfg.val_size)
        model = load_model(cfg.model, weights=cfg.weights, trust_pickle=cfg.trust_pickle,
                           num_classes=splits.info.num_classes, in_channels=splits.info.channels)
        channels = model_input_channels(model) or splits.info.channels
        if channels != splits.info.channels:
            self.log(f"data has {splits.info.channels} channel(s), the model wants {channels}: converting the images")
            splits = load_dataset(cfg.data, image_size=size, channels=channels, train_limit=cfg.train_limit,
                                  test_limit=cfg.test_limit, val_size=cfg.val_size)
        ranks = {"rank": distributed.rank(), "world_size": distributed.world_size()}  # --batch-size is per rank
        train, test = make_loaders(splits, cfg.batch_size, cfg.workers, cfg.seed, **ranks)
        val = make_loaders(splits, cfg.batch_size, cfg.workers, cfg.seed, eval_split="val", **ranks)[1] \
            if splits.val else None
        test, val = distributed.shard_eval_loader(test), distributed.shard_eval_loader(val)
        shape = cfg.input_shape or (1, channels, *splits.info.image_size)
        example = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(0))
        preflight.check_forward(model, example, "--input-shape")
        preflight.check_onnx_fits(cfg, model)
        loaders = {"train": train, "test": test, "val": val}
        preflight.check_data(model, loaders, torch.device("cpu"))
        model = to_device(model, device)
        distributed.broadcast_state(model)  # every rank starts from rank 0's weights, whatever its initialisation
        return self._graph_setup(model, loaders, example.to(device), device, splits.info)

    def _graph_setup(self, model, loaders, example, device, info) -> Setup:
        from catalyst_deploy.run import preflight

        cfg = self.cfg
        # first: it may swap attention modules for head-prunable ones (same outputs), which the counter then sees
        graph = ChannelGraph(model, example, cfg.ignore, prune_embedding=cfg.prune_embedding)
        macs, params = count_macs(model, example)
        # measured latencies differ from rank to rank: rank 0's decide for all
        weight = self.group_weight
        if weight is None and cfg.latency_aware:
            weight = distributed.from_main(lambda: self._latency_weights(model, example, graph))
        budget = Budget(tuple(graph.sizes), graph.trial_macs, cfg.target.macs(macs), cfg.round_to, cfg.max_layer_ratio,
                        weight, tuple(graph.unit_widths))
        preflight.check_target(cfg, budget, macs)
        preflight.check_method(cfg, graph)
        return Setup(model, loaders, example, device, info, graph, budget, macs, params)

    def _latency_weights(self, model, example, graph) -> torch.Tensor:
        """Per group: (measured ms per MAC on the --latency-aware backend / median) ** latency_alpha, from
        ONNX Runtime's profile of the dense model, so that slow-per-MAC layers shrink first."""
        from catalyst_deploy.latency.layers import group_latency_per_mac, group_weights, profile_conv_latency
        from catalyst_deploy.surgery.macs import layer_macs

        cpu_model, x = cpu_copy(model), example.cpu()
        per_mac = group_latency_per_mac(graph, layer_macs(cpu_model, x), profile_conv_latency(cpu_model, x))
        weight = group_weights(per_mac, self.cfg.latency_alpha)
        self.report.latency_aware = {"backend": self.cfg.latency_aware, "alpha": self.cfg.latency_alpha,
                                     "group_weight": [round(float(w), 4) for w in weight]}
        return weight

    def run(self, s: Setup, folder) -> PruneReport:
        """The pipeline on a checked `Setup`, writing through `folder` (a rundir.RunFolder). Once trained, the
        model's files are written first; a later failure or stop signal keeps them and says how to finish."""
        from catalyst_deploy.run.outputs import write_outputs

        cfg, rep = self.cfg, self.report
        start = time.perf_counter()
        rep.out, rep.device, rep.input_shape = str(folder.path), str(s.device), [1, *s.example.shape[1:]]
        rep.steps = {}
        main = distributed.is_main()
        ckpt = Checkpointer(folder, rep.config, enabled=main, world_size=distributed.world_size())
        phases = PhaseRunner(cfg, s, rep, ckpt, self.progress, self.log)
        with ckpt.watching_signals(), distributed.failure_boundary():
            resume = Resume(distributed.from_main(ckpt.load)) if cfg.resume else None  # rank 0's file, for all
            dense, mask, plan = phases.run(resume)
        rep.macs = Counts(s.macs, count_macs(s.model, s.example)[0])
        rep.params = Counts(s.params, count_macs(s.model, s.example)[1])
        rep.channels.update(removed=int(mask.sum()), total=s.graph.num_channels, pruned=mask.nonzero().flatten().tolist())
        if not main:  # the same model and report as rank 0's; rank 0 writes, exports and benchmarks
            rep.seconds["total"] = round(time.perf_counter() - start, 2)
            return rep
        try:
            write_outputs(s, plan, rep, folder, s.info)
            self._deploy(s, dense, plan, folder, ckpt.stop_requested)
        except BaseException as err:
            raise kept_after(err, folder) from err
        rep.seconds["total"] = round(time.perf_counter() - start, 2)
        from catalyst_deploy.run.outputs import write_report

        write_report(rep, folder)
        return rep

    def _deploy(self, s: Setup, dense, plan, folder, stop: str | None) -> None:
        """What follows the model's files: the plot, the exports and the benchmark (`stop`: a stop signal that
        came after the last step of training, honoured now that the model is written)."""
        from catalyst_deploy.errors import StopSignal
        from catalyst_deploy.run.deploy import deploy
        from catalyst_deploy.run.outputs import write_plot

        if stop:
            raise StopSignal(stop)
        write_plot(self.report, folder)
        deploy(self.cfg, s, dense, plan, self.report, folder, self.log)


def kept_after(err: BaseException, folder) -> BaseException:
    """The one-line error for a failure or a stop signal after the model's files were written: what is kept,
    what failed, and the command that finishes the run."""
    from catalyst_deploy.errors import CatalystDeployError, Interrupted, PartialFailure
    from catalyst_deploy.run.outputs import kept_message

    if isinstance(err, KeyboardInterrupt):
        name = getattr(err, "name", "SIGINT")
        return Interrupted(kept_message(folder, f"{name} stopped the run after training"), name)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    what = text if isinstance(err, CatalystDeployError) else f"unexpected {type(err).__name__}: {text}"
    return PartialFailure(kept_message(folder, f"after training: {what}"))


def check_sync_bn(cfg: PruneConfig, device: torch.device) -> None:
    """UsageError for sync_bn on CPU ranks: PyTorch's SyncBatchNorm runs on GPUs only."""
    from catalyst_deploy.errors import UsageError

    if cfg.sync_bn and distributed.active() and device.type != "cuda":
        raise UsageError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only): leave it off on "
                         "CPU, where each rank normalises with the statistics of its own batch")


def _quiet(_message: str) -> None:
    """The log of ranks other than 0."""


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def config_json(cfg: PruneConfig) -> dict:
    """The settings as JSON values (sections as mappings, paths as text)."""
    import dataclasses
    import json

    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval()
