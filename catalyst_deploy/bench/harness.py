"""The benchmark loop: per backend and batch, dense and pruned timed interleaved in one process.

    report = run_benchmark("pruned.onnx", "dense.onnx", BenchOptions(backends=("ort-cpu",), batches=(1, 8)))
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

from catalyst_deploy.bench.artifacts import ModelArtifact, load_artifact, sample_shape_of
from catalyst_deploy.bench.backends import load_for_backend, unavailable_reason
from catalyst_deploy.bench.report import BenchReport, BenchRow, machine_summary
from catalyst_deploy.bench.stats import LatencyStats
from catalyst_deploy.settings import MAX_BENCH_BATCH, MAX_BENCH_RUNS, MAX_BENCH_SECONDS
from catalyst_deploy.errors import CatalystDeployError, UsageError
from catalyst_deploy.formats import get_backend


@dataclass(frozen=True)
class BenchOptions:
    """Benchmark settings (defaults live here once).

    `input_shape`: per-image C,H,W (a leading batch axis is dropped); needed for PyTorch models only.
    Each model gets `warmup` untimed calls, then timed calls until it has at least `min_runs` runs AND
    `min_time_s` seconds of timed calls. `threads`: ONNX Runtime intra-op threads and torch CPU threads
    (None: the runtimes' defaults). `precision`: for engines built from ONNX (trt) and ort-trt.
    `flops_ratio`: pruned/dense MACs, drawn as the ideal; None: counted from the models when possible.
    """

    backends: tuple[str, ...] = ("ort-cpu",)
    batches: tuple[int, ...] = (1,)
    input_shape: tuple[int, ...] | None = None
    threads: int | None = None
    warmup: int = 5
    min_time_s: float = 1.0
    min_runs: int = 20
    precision: str = "fp16"
    flops_ratio: float | None = None
    trust_pickle: bool = False

    def __post_init__(self):
        from catalyst_deploy.exporters.tensorrt import PRECISIONS

        if not self.backends:
            raise UsageError("no benchmark backend given")
        for name in self.backends:
            get_backend(name)
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be >= 1, got {self.threads}")
        if max(self.batches) > MAX_BENCH_BATCH:
            raise UsageError(f"batch sizes must be <= {MAX_BENCH_BATCH}, got {list(self.batches)}")
        if not (1 <= self.min_runs <= MAX_BENCH_RUNS and 0 <= self.warmup <= MAX_BENCH_RUNS):
            raise UsageError(f"need 1 <= min_runs <= {MAX_BENCH_RUNS} and 0 <= warmup <= {MAX_BENCH_RUNS}, got "
                             f"{self.min_runs} and {self.warmup}")
        if not 0 <= self.min_time_s <= MAX_BENCH_SECONDS:  # also false for nan
            raise UsageError(f"min_time_s must be a number of seconds from 0 to {MAX_BENCH_SECONDS:g}, got "
                             f"{self.min_time_s}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict:
        return {"backends": list(self.backends), "batches": list(self.batches), "threads": self.threads,
                "warmup": self.warmup, "min_time_s": self.min_time_s, "min_runs": self.min_runs,
                "precision": self.precision, "statistic": "p50"}


def run_benchmark(pruned, baseline=None, options: BenchOptions = BenchOptions(), progress=None) -> BenchReport:
    """Benchmark `pruned` (and `baseline`, the dense model, when given) on every backend and batch.

    Models are nn.Modules or paths (.onnx, .engine, .pt). A backend that is unavailable or fails is
    reported in its rows (`error`), and the others still run. `progress(text)` is called per cell.
    Raises UsageError for a missing file or an undeterminable input shape.
    """
    artifacts = ([load_artifact(baseline, "baseline", options.trust_pickle)] if baseline is not None else [])
    artifacts.append(load_artifact(pruned, "pruned", options.trust_pickle))
    sample_shape = sample_shape_of(artifacts, options.input_shape)
    flops_ratio = options.flops_ratio
    if flops_ratio is None and len(artifacts) == 2:
        from catalyst_deploy.bench.macs import macs_ratio

        flops_ratio = macs_ratio(artifacts[1], artifacts[0], sample_shape)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="catalyst-deploy-bench-") as workdir:
        for backend in options.backends:
            rows += bench_backend(backend, artifacts, sample_shape, options, Path(workdir), progress)
    return BenchReport(options.to_dict(), {a.role: a.source for a in artifacts}, tuple(sample_shape),
                       flops_ratio, tuple(rows), machine_summary())


def merge_reports(reports: Sequence[BenchReport]) -> BenchReport:
    """One report from several runs with the same settings (e.g. one per exported format)."""
    first = reports[0]
    models = {role: ", ".join(dict.fromkeys(r.models[role] for r in reports if role in r.models))
              for role in first.models}
    settings = {**first.settings, "backends": [b for r in reports for b in r.settings["backends"]]}
    return BenchReport(settings, models, first.input_shape, first.flops_ratio,
                       tuple(row for r in reports for row in r.rows), first.machine)


def bench_backend(backend: str, artifacts: Sequence[ModelArtifact], sample_shape, options: BenchOptions,
                  workdir: Path, progress=None) -> list[BenchRow]:
    """All rows of one backend: load each model once, then time every batch."""
    reason = unavailable_reason(backend)
    if reason:
        return [BenchRow(backend, b, a.role, None, reason) for b in options.batches for a in artifacts]
    loaded, errors = {}, {}
    for artifact in artifacts:
        try:
            loaded[artifact.role] = load_for_backend(backend, artifact, sample_shape, options.threads,
                                                     options.precision, workdir)
        except Exception as err:  # reported in the row: one broken model/backend must not stop the run
            errors[artifact.role] = describe_error(err)
    rows = []
    for batch in options.batches:
        if progress:
            progress(f"{backend} batch {batch}")
        rows += bench_batch(backend, batch, loaded, errors, options)
    return rows


def bench_batch(backend: str, batch: int, loaded: dict, load_errors: dict, options: BenchOptions) -> list[BenchRow]:
    """Prepare every loaded model for `batch`, time them interleaved, and return one row per model."""
    errors = dict(load_errors)
    calls = {}
    for role, model in loaded.items():
        try:
            calls[role] = model.prepare(batch)
        except Exception as err:
            errors[role] = describe_error(err)
    try:
        timings = time_interleaved(calls, options.warmup, options.min_time_s, options.min_runs)
    except Exception as err:
        errors.update({role: describe_error(err) for role in calls})
        timings = {}
    roles = [r for r in ("baseline", "pruned") if r in errors or r in calls]
    return [BenchRow(backend, batch, role, LatencyStats.from_seconds(timings[role], batch) if role in timings else None,
                     errors.get(role)) for role in roles]


def time_interleaved(calls: dict[str, Callable[[], None]], warmup: int, min_time_s: float,
                     min_runs: int) -> dict[str, list[float]]:
    """Per-call seconds of each callable, timed in alternation (A B, B A, A B, ...) so that both see the
    same machine state; stops once every callable has `min_runs` runs and `min_time_s` seconds timed."""
    order = list(calls)
    for _ in range(warmup):
        for role in order:
            calls[role]()
    times: dict[str, list[float]] = {role: [] for role in order}
    total = dict.fromkeys(order, 0.0)
    rounds = 0
    while any(len(times[r]) < min_runs or total[r] < min_time_s for r in order):
        for role in (order if rounds % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            calls[role]()
            elapsed = time.perf_counter() - start
            times[role].append(elapsed)
            total[role] += elapsed
        rounds += 1
    return times


def describe_error(err: BaseException) -> str:
    """One line for a report row: our own errors as they read, others with their type."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, CatalystDeployError) else f"{type(err).__name__}: {text}"
