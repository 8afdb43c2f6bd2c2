"""`--target-latency`: find the MACs share whose exported model meets a latency target on the deploy backend.

Latency depends on the architecture (channel counts), not on the weights, so the search cuts copies of the
dense model (latency-aware allocation, `allocation.Budget`), exports each to ONNX and times it interleaved
with the dense export on the backend, and adjusts the share until the measured ratio is within `tolerance`
under the target. The prune run then uses that share as its FLOPs target, and `api.prune` checks the
latency of the files it ships (re-running with a corrected share when they miss).

    target = targets.parse_latency_target("0.6x")               # or "3ms" (batch 1), "3ms@8"
    result = search_share(model, example, graph, priority, target, budget_for, "ort-cpu")
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from catalyst_deploy.errors import CatalystDeployError
from catalyst_deploy.targets import LatencyTarget

TOLERANCE = 0.03  # the measured latency must land within 3% under the target
CLIFF = 0.005  # shares this close that straddle the window: latency jumps there (a kernel's channel block)


def in_window(ratio: float, goal: float, tolerance: float = TOLERANCE) -> bool:
    """A measured latency ratio meets a goal when it is at most the goal and within `tolerance` under it."""
    return goal * (1 - tolerance) <= ratio <= goal


@dataclass
class SearchResult:
    share: float
    ratio: float
    dense_ms: float
    pruned_ms: float
    target_ratio: float
    met: bool
    history: list[dict] = field(default_factory=list)
    cliff: tuple[float, float] | None = None  # (share, share) between which the latency jumps over the window

    @property
    def iterations(self) -> int:
        return len(self.history)


def search_share(model, example, graph, priority, target: LatencyTarget, budget_for: Callable, backend: str,
                 tolerance: float = TOLERANCE, max_iterations: int = 10, log=print, bench_options=None) -> SearchResult:
    """The MACs share (of the dense model's) whose cut meets `target` on `backend` (see module doc).

    `budget_for(share)` returns the `allocation.Budget` for a share; `priority` ranks channels within groups.
    Raises CatalystDeployError when the dense model cannot be timed."""
    import copy

    from catalyst_deploy.surgery.plan import apply_plan

    with tempfile.TemporaryDirectory(prefix="catalyst-deploy-latency-") as work:
        dense_onnx = _export(model, example, Path(work) / "dense.onnx")

        def measure(share: float, i: int):
            cut = apply_plan(copy.deepcopy(model).cpu().eval(), graph.plan_for(budget_for(share).select(priority)))
            return _measure(_export(cut, example, Path(work) / f"cut{i}.onnx"), dense_onnx, backend, target.batch,
                            example, bench_options)

        return find_share(measure, target, tolerance, max_iterations, log)


def find_share(measure: Callable, target: LatencyTarget, tolerance: float = TOLERANCE, max_iterations: int = 10,
               log=print) -> SearchResult:
    """The search itself, on any `measure(share, iteration) -> (ratio, dense ms, pruned ms)`: a multiplicative
    correction inside a shrinking bracket, stopping when a ratio lands in [goal * (1 - tolerance), goal]. When
    the bracket narrows below `CLIFF` without landing (the latency jumps over the window there), or the
    iterations run out, it returns the closest measured share under the goal (`cliff` says where it jumped)."""
    lo, hi, share = 0.0, 1.0, target.ratio if target.ratio is not None else 0.6
    result = best = None
    history: list[dict] = []
    for i in range(max_iterations):
        share = _next_share(share, result, lo, hi, tolerance)
        ratio, dense_ms, pruned_ms = measure(share, i)
        goal = target.as_ratio(dense_ms)
        met = in_window(ratio, goal, tolerance)
        result = SearchResult(share, ratio, dense_ms, pruned_ms, goal, met, history)
        history.append({"share": round(share, 4), "ratio": round(ratio, 4), "pruned_ms": round(pruned_ms, 4)})
        log(f"latency search {i + 1}: MACs share {share:.3f} -> latency ratio {ratio:.3f} (target {goal:.3f})")
        if ratio <= goal and (best is None or ratio > best.ratio):
            best = result
        if met:
            return result
        lo, hi = (lo, share) if ratio > goal else (share, hi)
        if hi - lo < CLIFF:
            result.cliff = (round(lo, 4), round(hi, 4))
            log(f"latency search: the latency jumps over the target window between MACs shares {lo:.3f} and "
                f"{hi:.3f}; keeping the closest share under the target")
            break
    if best is not None:  # the closest measured cut under the target
        best.cliff = result.cliff
        return best
    return result


def _next_share(share, result, lo: float, hi: float, tolerance: float = TOLERANCE) -> float:
    """First guess: the target ratio itself; then correct multiplicatively (latency is close to proportional
    to MACs), staying strictly inside the bracket [lo, hi] and falling back to bisection at its edges."""
    if result is None:
        return share
    guess = result.share * (result.target_ratio * (1 - tolerance / 2)) / result.ratio
    if not lo < guess < hi:
        guess = (lo + hi) / 2
    return guess


def _export(model, example, path: Path) -> Path:
    from catalyst_deploy.exporters.onnx import torch_to_onnx

    torch_to_onnx(model.cpu().eval(), example.cpu(), path, exporter="torchscript")  # fast; only timed, never shipped
    return path


def _measure(pruned_onnx: Path, dense_onnx: Path, backend: str, batch: int, example, options=None):
    """(ratio, dense ms, pruned ms) at `batch`, both timed interleaved in this process."""
    import dataclasses

    from catalyst_deploy.bench.harness import BenchOptions, run_benchmark

    options = dataclasses.replace(options or BenchOptions(min_time_s=1.0, min_runs=20), backends=(backend,),
                                  batches=(batch,), input_shape=tuple(example.shape[1:]))
    report = run_benchmark(pruned_onnx, dense_onnx, options)
    ratio = report.latency_ratio(backend, batch)
    if ratio is None:
        reasons = "; ".join(r.error for r in report.rows if r.error)
        raise CatalystDeployError(f"--target-latency: {backend} could not time the models: {reasons}")
    return ratio, report.cell(backend, batch, "baseline").stats.p50_ms, report.cell(backend, batch, "pruned").stats.p50_ms
