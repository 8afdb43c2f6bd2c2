"""ONNX Runtime CPU latency, pruned / dense, of torchvision models cut to half their MACs by several
pruning methods, all timed interleaved in one process (README, "Deploying for latency").

    python benchmarks/latency.py                                   # resnet18 + mobilenet_v2, batch 1 and 8
    python benchmarks/latency.py --models resnet18 --batches 1 --repeats 1

Methods (all L2-magnitude ranking inside a layer, random-init weights: latency depends on shapes only):
  anchor             torch-pruning's own MetaPruner, the same share of every layer, round_to 8: plain
                     torch-pruning as a user would run it (its channel counts found by bisection over the
                     pruning ratio instead of stepping through an iterative schedule)
  anchor-r16         the same with round_to 16 (the NCHWc block of ORT's AVX-512 convolutions)
  surgery-l2         the package's one pruning path (graph.ChannelGraph -> allocation.Budget.select ->
                     plan.apply_plan) with its defaults: global L2 ranking, round_to 8
  uniform-r16        the same path, every group weighted 1 (`allocation.latency_weighted`: the same share
                     of every group), round_to 16
  latency-aware-r16  the same path with `bench.layer_latency.group_weights(per_mac, alpha=1)` as the budget's
                     group weights: groups whose convs cost the most ORT time per MAC, profiled in the whole
                     model, lose channels first
  latency-aware2-r16 the same with alpha 2 (a stronger pull toward the expensive groups; the default)

Prints a table and writes it between <!-- latency:begin --> and <!-- latency:end --> in
benchmarks/RESULTS.md through benchmarks/results_file.py (other sections of that file are left alone;
--no-write prints only).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

import torch
import torchvision

from catalyst_deploy.bench.environment import channel_multiple
from catalyst_deploy.surgery.allocation import Budget
from catalyst_deploy.bench.harness import time_interleaved
from catalyst_deploy.latency.layers import group_latency_per_mac, group_weights, profile_conv_latency
from catalyst_deploy.bench.stats import LatencyStats
from catalyst_deploy.exporters.onnx import open_ort_session, torch_to_onnx
from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms
from catalyst_deploy.surgery.macs import count_macs, layer_macs
from catalyst_deploy.surgery.plan import apply_plan
from results_file import git_commit, machine_line, publish  # benchmarks/results_file.py

SECTION = "latency"  # this script's section of benchmarks/RESULTS.md (results_file.write_section)


# ---- pruning methods ------------------------------------------------------------------------------
def prune_anchor(model, example, target: float, round_to: int, steps: int = 400):
    """The anchor's structure: the first k/steps uniform torch-pruning ratio whose MACs are <= target."""
    import torch_pruning as tp

    dense = count_macs(model, example)[0]

    def cut(k: int):
        trial = copy.deepcopy(model)
        head = [m for m in trial.modules() if isinstance(m, torch.nn.Linear)][-1:]
        tp.pruner.MetaPruner(trial, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=k / steps, ignored_layers=head, round_to=round_to).step()
        return trial

    lo, hi = 1, steps
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count_macs(cut(mid), example)[0] <= target * dense else (mid + 1, hi)
    return cut(lo)


def prune_to_share(model, example, share: float, round_to: int, group_weight=None, graph=None):
    """The package's one pruning path: cut `model` in place to <= `share` of its MACs, channels ranked by L2
    norm (lowest first), counts per group set by `allocation.Budget` (latency-weighted when `group_weight`)."""
    graph = graph or ChannelGraph(model, example)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, share * count_macs(model, example)[0], round_to, 0.9,
                    group_weight)
    priority = -channel_norms(graph.producer_slices(), graph.num_channels)
    return apply_plan(model, graph.plan_for(budget.select(priority)))


def prune_surgery(model, example, target: float, round_to: int, alpha: float | None, threads: int = 2):
    """`prune_to_share`: global L2 ranking when `alpha` is None; else latency-weighted groups, weights
    `group_weights(per_mac, alpha)` (alpha 0: all 1, uniform; > 0: latency per MAC profiled on ORT CPU)."""
    graph = ChannelGraph(model, example)
    weight = None
    if alpha is not None:
        weight = torch.ones(len(graph.sizes))
        if alpha > 0:
            per_mac = group_latency_per_mac(graph, layer_macs(model, example),
                                            profile_conv_latency(model, example, threads=threads))
            weight = group_weights(per_mac, alpha)
    return prune_to_share(model, example, target, round_to, weight, graph)


# method -> f(model, example, MACs target, ORT threads) -> pruned model
METHODS = {
    "anchor": lambda m, x, t, n: prune_anchor(m, x, t, round_to=8),
    "anchor-r16": lambda m, x, t, n: prune_anchor(m, x, t, round_to=16),
    "surgery-l2": lambda m, x, t, n: prune_surgery(m, x, t, round_to=8, alpha=None),
    "uniform-r16": lambda m, x, t, n: prune_surgery(m, x, t, round_to=16, alpha=0.0),
    "latency-aware-r16": lambda m, x, t, n: prune_surgery(m, x, t, round_to=16, alpha=1.0, threads=n),
    "latency-aware2-r16": lambda m, x, t, n: prune_surgery(m, x, t, round_to=16, alpha=2.0, threads=n),
}


def build_variants(name: str, size: int, target: float, methods: list[str], threads: int) -> dict[str, tuple]:
    """{"dense": (model, 1.0), method: (pruned model, MACs ratio), ...}, from one random-init model."""
    torch.manual_seed(0)
    dense = torchvision.models.get_model(name).eval()
    example = torch.randn(1, 3, size, size)
    dense_macs = count_macs(dense, example)[0]
    variants = {"dense": (dense, 1.0)}
    for method in methods:
        pruned = METHODS[method](copy.deepcopy(dense), example, target, threads).eval()
        variants[method] = (pruned, count_macs(pruned, example)[0] / dense_macs)
    return variants


# ---- measuring ------------------------------------------------------------------------------------
def latency_ratios(variants: dict, size: int, batches: list[int], threads: int, runs: dict, repeats: int,
                   workdir: Path) -> dict:
    """{(method, batch): [ratio to dense per repeat]} and {("dense-ms", batch): [dense p50 ms per repeat]}.

    Every variant's ORT session (intra-op spinning off) is timed in turn in one process, in ABBA order.
    A repeat's ratio is the median over rounds of (variant time / dense time in the same round): pairing
    each run with the dense run next to it cancels the load that other jobs put on the machine, which
    changes on a scale of seconds, longer than a round.
    """
    sessions = {}
    for label, (model, _) in variants.items():
        path = workdir / f"{label}.onnx"
        torch_to_onnx(model, torch.randn(1, 3, size, size), path)
        sessions[label] = open_ort_session(path, intra_op_threads=threads)
    out: dict = {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size).numpy()
        calls = {label: (lambda s=s: s.run(None, {"input": x})) for label, s in sessions.items()}
        for _ in range(repeats):
            times = time_interleaved(calls, warmup=3, min_time_s=0.0, min_runs=runs[batch])
            out.setdefault(("dense-ms", batch), []).append(LatencyStats.from_seconds(times["dense"], batch).p50_ms)
            for label in variants:
                paired = [t / d for t, d in zip(times[label], times["dense"])]
                out.setdefault((label, batch), []).append(_median(paired))
    return out


def channel_staircase(threads: int) -> str:
    """Latency of one 3x3 conv at 56x56 (ResNet-18 layer1) at 48, 56 and 64 channels: the NCHWc block."""
    import io
    import warnings

    cells = []
    for channels in (48, 56, 64):
        conv = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU()).eval()
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(conv, (torch.randn(1, channels, 56, 56),), buffer, dynamo=False, input_names=["input"])
        session = open_ort_session(buffer.getvalue(), intra_op_threads=threads)
        x = torch.randn(1, channels, 56, 56).numpy()
        times = time_interleaved({"conv": lambda: session.run(None, {"input": x})}, 3, 0.0, 50)["conv"]
        cells.append(f"{channels} ch {LatencyStats.from_seconds(times, 1).p50_ms:.2f} ms")
    return "one 3x3 conv at 56x56, batch 1: " + ", ".join(cells)


# ---- reporting ------------------------------------------------------------------------------------
def format_section(all_results: dict, args, seconds: float, loads: tuple, staircase: str) -> str:
    """The RESULTS.md section: settings, machine, and one row per model and method."""
    batches = args.batches
    head = ["model", "method", "MACs ratio"] + [f"latency ratio b{b} (min-max)" for b in batches] + ["latency / MACs"]
    lines = ["## ONNX Runtime CPU latency, pruned / dense (`benchmarks/latency.py`)", "",
             f"Command: `{' '.join(['python benchmarks/latency.py', *args.argv])}`", "",
             f"- machine: {machine_line()}; {platform.platform()}; onnxruntime "
             f"{__import__('onnxruntime').__version__}, torch {torch.__version__}; commit {git_commit()}",
             f"- {args.threads} intra-op threads, spinning off; input {args.size}x{args.size}; every variant's session "
             f"timed in turn in one process (ABBA), >= {args.runs_b1}/{args.runs_b8} rounds (batch 1/other); ratio = "
             f"median over rounds of (variant / dense in the same round), median of {args.repeats} repeats (range "
             f"in brackets); MACs target {args.target}",
             f"- load average before/after: {loads[0]:.2f} / {loads[1]:.2f} (other jobs share these 2 cores); "
             f"run took {seconds / 60:.1f} min",
             f"- NCHWc staircase: {staircase}; `environment.channel_multiple(needs_gpu=False)` = "
             f"{channel_multiple(needs_gpu=False)} here", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, (variants, results) in all_results.items():
        dense_ms = ", ".join(f"b{b} {_median(results['dense-ms', b]):.1f} ms" for b in batches)
        lines.append(f"| {model} | dense ({dense_ms}) | 1.000 | " + " | ".join("1.000" for _ in batches) + " | |")
        for method, (_, macs) in variants.items():
            if method == "dense":
                continue
            ratios = [results[method, b] for b in batches]
            cells = [f"**{_median(r):.3f}** ({min(r):.3f}-{max(r):.3f})" for r in ratios]
            efficiency = "/".join(f"{_median(r) / macs:.2f}" for r in ratios)
            lines.append(f"| {model} | {method} | {macs:.3f} | " + " | ".join(cells) + f" | {efficiency} |")
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--target", type=float, default=0.5, help="MACs ratio to prune to")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs-b1", type=int, default=40, help="timed runs per variant at batch 1")
    parser.add_argument("--runs-b8", type=int, default=12, help="timed runs per variant at other batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    import sys

    args.argv = sys.argv[1:]
    return args


def main() -> None:
    import tempfile

    args = parse_args()
    torch.set_num_threads(1)  # pruning and export only; timing is ORT's
    start, load_before = time.time(), os.getloadavg()[0]
    staircase = channel_staircase(args.threads)
    print(staircase, flush=True)
    all_results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            variants = build_variants(name, args.size, args.target, args.methods, args.threads)
            runs = {b: args.runs_b1 if b == 1 else args.runs_b8 for b in args.batches}
            all_results[name] = (variants, latency_ratios(variants, args.size, args.batches, args.threads, runs,
                                                          args.repeats, Path(workdir)))
            print(f"{name} done ({(time.time() - start) / 60:.1f} min)", flush=True)
    section = format_section(all_results, args, time.time() - start, (load_before, os.getloadavg()[0]), staircase)
    publish(SECTION, section, write=not args.no_write)


if __name__ == "__main__":
    main()
