"""The `--target-latency` loop of `api.prune`: search the MACs share on cut copies of the dense model
(`latency.target.search_share`), prune to it, check the latency of the exported files, and correct the share
when they miss.

    report = prune_to_latency(cfg, "runs/r18", progress=None, log=print, prune=api.prune)
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from catalyst_deploy.config import PruneConfig
from catalyst_deploy.errors import CatalystDeployError, PartialFailure, UsageError


def prune_to_latency(cfg: PruneConfig, out, progress, log, prune: Callable, max_rounds: int = 3):
    """`--target-latency`: search the MACs share on cut copies of the dense model (`latency.target`), prune to
    it with `prune` (`api.prune`), then measure the exported files; a miss re-runs with a corrected share (at
    most `max_rounds` runs)."""
    import dataclasses

    from catalyst_deploy.latency.target import TOLERANCE, in_window, search_share
    from catalyst_deploy.targets import parse_latency_target

    from catalyst_deploy.run.pipeline import PruneRun
    from catalyst_deploy.run.ranks import launched

    if launched()[0] > 1:
        raise UsageError("--target-latency runs in one process (its search times models on this machine): run it "
                         "without torchrun, or give the MACs share it found as --target-flops under torchrun")
    target = parse_latency_target(cfg.target_latency)
    cfg = _latency_config(cfg, target, out)
    setup = PruneRun(cfg, progress=progress, log=log).setup()
    budget_for = lambda share: dataclasses.replace(setup.budget, target_macs=share * setup.macs)  # noqa: E731
    priority = _search_priority(cfg, setup)
    from catalyst_deploy.bench.harness import BenchOptions

    # the search compares cuts a few percent apart: time each for longer than a plain benchmark would
    timing = BenchOptions(threads=cfg.bench.threads, min_time_s=max(2.0, cfg.bench.min_time_s),
                          min_runs=max(50, cfg.bench.min_runs))
    found = search_share(setup.model, setup.example, setup.graph, priority, target, budget_for, cfg.latency_backend,
                         log=log, bench_options=timing)
    share, rounds = found.share, []
    for round_ in range(1 if found.cliff else max_rounds):  # across a cliff another share cannot do better
        run_cfg = dataclasses.replace(cfg, target_flops=f"{share:.6f}", overwrite=cfg.overwrite or round_ > 0)
        report = prune(run_cfg, progress, log, _group_weight=setup.budget.group_weight)  # the search's weights
        cell = next((c for c in report.latency.get("cells", []) if c["backend"] == cfg.latency_backend
                     and c["batch"] == target.batch), None) if report.latency else None
        if cell is None:
            raise CatalystDeployError(f"--target-latency: {cfg.latency_backend} timed none of the exported files")
        goal = target.as_ratio(cell["dense_ms"])
        rounds.append({"macs_share": round(share, 4), "latency_ratio": round(cell["ratio"], 4), "target_ratio": round(goal, 4)})
        if in_window(cell["ratio"], goal):
            break
        share *= goal * (1 - TOLERANCE / 2) / cell["ratio"]
    met = in_window(rounds[-1]["latency_ratio"], goal)
    report.latency["target"] = {"target": str(target), "backend": cfg.latency_backend, "batch": target.batch,
                                "search": found.history, "prune_runs": rounds, "met": met, "cliff": found.cliff}
    from catalyst_deploy.run.outputs import write_report
    from catalyst_deploy.run.rundir import read_marker, reopen_finished

    if read_marker(Path(out)):
        folder = reopen_finished(out)
        write_report(report, folder)
        folder.finish(folder.status)
    if not met:
        why = (f"the latency jumps over the window between MACs shares {found.cliff[0]} and {found.cliff[1]}"
               if found.cliff else f"{len(rounds)} prune run(s) did not land in it")
        raise PartialFailure(f"--target-latency {target}: reached a latency ratio of {rounds[-1]['latency_ratio']:.3f} "
                             f"against {goal:.3f} (window {goal * (1 - TOLERANCE):.3f}-{goal:.3f}): {why}; the closest "
                             f"model under the target is in {out} (report.md has every measurement)")
    return report


def _search_priority(cfg: PruneConfig, setup):
    """How the search ranks channels: the method's own ranking when it exists before training (the one-shot
    methods), so that the searched cut is the cut the run makes; otherwise the channels' L2 norms."""
    from catalyst_deploy.surgery.graph import channel_norms
    from catalyst_deploy.method_table import get_method
    from catalyst_deploy.methods import make_method

    if not get_method(cfg.method).regularized and cfg.method != "taylor":  # taylor needs gradients first
        method = make_method(cfg)
        method.start(setup.graph, setup.budget, steps=0)  # ranked before any training
        return method.priority()
    return -channel_norms(setup.graph.producer_slices(), setup.graph.num_channels)


def _latency_config(cfg: PruneConfig, target, out) -> PruneConfig:
    """The run settings a latency target implies: latency-aware allocation on the deploy backend, channel
    counts in whole blocks of the backend's kernels (a count that ends mid-block costs the whole block, so
    latency would jump between neighbouring shares), an export the backend runs, a benchmark at the target's
    batch."""
    import dataclasses
    import math

    from catalyst_deploy.bench.environment import channel_multiple
    from catalyst_deploy.formats import get_backend

    backend = get_backend(cfg.latency_backend)
    round_to = math.lcm(cfg.round_to or 1, channel_multiple(backend.needs_gpu))
    fmt = backend.runs
    formats = cfg.export.formats if fmt in cfg.export.formats else (*cfg.export.formats, fmt)
    batches = tuple(sorted(set(cfg.bench.batches) | {target.batch}))
    threads = cfg.bench.threads or cfg.threads  # the search and the final check time the same way
    return dataclasses.replace(cfg, out=Path(out), round_to=round_to, latency_aware=cfg.latency_aware or cfg.latency_backend,
                               export=dataclasses.replace(cfg.export, formats=formats),
                               bench=dataclasses.replace(cfg.bench, enabled=True, batches=batches, threads=threads),
                               target_latency=None)
