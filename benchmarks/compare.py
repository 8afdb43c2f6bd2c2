"""Catalyst against the standard pruning methods on Fashion-MNIST, with the paper's claims measured (issue 4).

    python benchmarks/compare.py                  # full: 3 seeds x 6 methods x targets 0.5, 0.3 (< 90 min, idle 2 cores)
    python benchmarks/compare.py --quick          # smoke run: data subsets, 1 seed, 3 methods (< 10 min)
    python benchmarks/compare.py --seeds 0 --methods catalyst l1 --targets 0.3

1. Times a few training steps and test batches, and prints the run's budget before starting.
2. Trains one dense small ResNet (3 stages, BN, residual adds) per seed, cached in --cache.
3. Prunes it with every method to every FLOPs target through `catalyst_deploy.api.prune`: the same
   regularized-phase and recovery epochs, LR schedule and surgery for all; then times the dense and
   pruned models with ONNX Runtime on the CPU (interleaved, spinning off).
4. Fair chance (P2): rescales half of the channels by k, function-preserving, and compares the share
   pruned among rescaled and untouched channels (compare_fairness.py), conv weights held and trainable.
5. Writes compare.json (one record per method, target and seed), compare_fairness.json, the plots
   accuracy_vs_flops.png, fairness.png, bifurcation_trajectories.png, and the section of RESULTS.md
   between <!-- compare:begin --> and <!-- compare:end --> (other sections are left alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import shlex
import time
import traceback
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = f"fashion-mnist:{HERE.parents[1] / 'shared' / 'data' / 'fashion-mnist'}"
ALL_METHODS = ["catalyst", "l1", "group-lasso", "slimming", "taylor", "random"]
RECIPE = "fashion-mnist"  # lr, batch size, momentum, weight decay of every pruning run
TRAJECTORY_POINTS = 120  # c of every channel is recorded about this many times per Catalyst phase

# The two presets; any option given on the command line wins over them.
FULL = dict(seeds=[0, 1, 2], targets=[0.5, 0.3], methods=ALL_METHODS, widths=[32, 64, 128], dense_epochs=10.0,
            dense_lr=0.1, reg_epochs=1.0, recover_epochs=1.0, steps_per_epoch=None, train_limit=None,
            test_limit=None, fairness_factors=[0.1, 10.0], fairness_methods=["catalyst", "l1", "group-lasso"],
            fairness_epochs=0.5, fairness_target=0.5, latency_batches=[1, 32], latency_min_time=1.0,
            latency_runs=30)
QUICK = dict(FULL, seeds=[0], methods=["catalyst", "l1", "group-lasso"], dense_epochs=3.0, train_limit=8000,
             test_limit=2000, fairness_epochs=0.5, latency_min_time=0.3, latency_runs=20)

# Options with a preset value: name -> (type, nargs, help).
OPTIONS = {
    "seeds": (int, "+", "seeds: one dense model each, and the pruning runs' data order"),
    "targets": (float, "+", "FLOPs targets, as shares of the dense model's MACs"),
    "methods": (str, "+", "pruning methods compared"),
    "widths": (int, "+", "the small ResNet's three stage widths"),
    "dense_epochs": (float, None, "dense training epochs (one cosine schedule)"),
    "dense_lr": (float, None, "dense training learning rate"),
    "reg_epochs": (float, None, "regularized phase of every method (plain fine-tuning for l1/taylor/random)"),
    "recover_epochs": (float, None, "recovery fine-tuning after the cut"),
    "steps_per_epoch": (int, None, "at most this many steps per epoch (tiny test runs)"),
    "train_limit": (int, None, "train on a fixed pseudo-random subset of this many images"),
    "test_limit": (int, None, "evaluate on a fixed subset of this many test images"),
    "fairness_factors": (float, "+", "rescale factors k of the fair-chance experiment"),
    "fairness_methods": (str, "*", "methods of the fair-chance experiment (none: skip it)"),
    "fairness_epochs": (float, None, "regularized phase of each fair-chance run"),
    "fairness_target": (float, None, "FLOPs target of the fair-chance runs"),
    "latency_batches": (int, "+", "ONNX Runtime batch sizes timed"),
    "latency_min_time": (float, None, "seconds of timed ORT calls per model and batch, at least"),
    "latency_runs": (int, None, "timed ORT calls per model and batch, at least"),
}

# Seconds per run beyond training and evaluation (data loading, graph tracing, trial cuts, saving,
# ONNX export), measured on the quick run; used only for the printed estimate.
RUN_OVERHEAD_S, FAIRNESS_OVERHEAD_S = 8.0, 4.0
BUDGET_MIN = 90  # the full run's wall-time budget on the idle 2-core machine (issue 4)


@dataclass(frozen=True)
class CompareSettings:
    """Everything one comparison run depends on (the presets above, overridden by the command line)."""

    quick: bool
    dense_only: bool
    reuse: list[str]
    data: str
    out: Path
    cache: Path
    device: str
    threads: int | None
    seeds: list[int]
    targets: list[float]
    methods: list[str]
    widths: list[int]
    dense_epochs: float
    dense_lr: float
    reg_epochs: float
    recover_epochs: float
    steps_per_epoch: int | None
    train_limit: int | None
    test_limit: int | None
    fairness_factors: list[float]
    fairness_methods: list[str]
    fairness_epochs: float
    fairness_target: float
    latency_batches: list[int]
    latency_min_time: float
    latency_runs: int
    argv: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return "python benchmarks/compare.py " + shlex.join(self.argv)


def parse_settings(argv: list[str] | None = None) -> CompareSettings:
    """Command line -> settings: the FULL (or, with --quick, QUICK) preset, then the options given."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: data subsets, 1 seed, 3 methods (< 10 min)")
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset spec (default: the full Fashion-MNIST in ../shared)")
    p.add_argument("--out", type=Path, default=HERE, help="where compare.json, the plots and RESULTS.md go")
    p.add_argument("--cache", type=Path, default=HERE / "cache", help="dense models and per-run outputs")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: the faster of torch's "
                   "default and 1 in a short probe)")
    p.add_argument("--dense-only", action="store_true",
                   help="train and cache the dense models, then stop (splits the budget in two sittings)")
    p.add_argument("--reuse", nargs="+", default=[], choices=ALL_METHODS, metavar="METHOD",
                   help="take these methods' runs from --cache when one was made with the same settings (prune "
                        "config, dense model, latency options); RESULTS.md names the reused runs and their commit. "
                        "For the methods whose code did not change since, e.g. the baselines while Catalyst is tuned")
    for name, (kind, nargs, text) in OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, nargs=nargs, help=f"{text} (full: {FULL[name]}, "
                       f"quick: {QUICK[name]})", choices=ALL_METHODS if name.endswith("methods") else None)
    args = vars(p.parse_args(argv))
    preset = QUICK if args["quick"] else FULL
    values = {f.name: args[f.name] if args.get(f.name) is not None else preset.get(f.name) for f in fields(CompareSettings)
              if f.name != "argv"}
    return CompareSettings(**values, argv=tuple(argv))


# ---- budget ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitCosts:
    """Measured seconds per training step and per test batch, and the loaders' lengths."""

    step_s: float
    eval_batch_s: float
    steps_per_epoch: int
    test_batches: int
    threads: int

    @property
    def epoch_s(self) -> float:
        return self.step_s * self.steps_per_epoch

    @property
    def eval_s(self) -> float:
        return self.eval_batch_s * self.test_batches


def budget_lines(s: CompareSettings, units: UnitCosts, seeds_to_train: int, reused: int = 0) -> tuple[list[str], float]:
    """The printed plan: seconds per part of the run from the measured unit costs, and the total
    (`reused` runs come from the cache and cost nothing)."""
    latency_s = 2.0 + 2 * len(s.latency_batches) * s.latency_min_time
    run_s = (s.reg_epochs + s.recover_epochs) * units.epoch_s + 4 * units.eval_s + RUN_OVERHEAD_S + latency_s
    runs = 0 if s.dense_only else len(s.seeds) * len(s.targets) * len(s.methods) - reused
    dense_s = seeds_to_train * s.dense_epochs * (units.epoch_s + units.eval_s)
    fair_runs = 0 if s.dense_only else len(s.fairness_factors) * 2 * len(s.fairness_methods)
    fair_s = fair_runs * (s.fairness_epochs * units.epoch_s + FAIRNESS_OVERHEAD_S) + len(s.fairness_factors) * units.eval_s
    total = dense_s + runs * run_s + fair_s
    lines = [
        f"measured: {units.step_s:.3f} s per training step -> {units.epoch_s:.0f} s per epoch ({units.steps_per_epoch} steps), "
        f"{units.eval_s:.1f} s per test evaluation ({units.test_batches} batches); load average {os.getloadavg()[0]:.2f}",
        f"dense models: {seeds_to_train} to train x {s.dense_epochs:g} epochs (+ an evaluation each) = {dense_s / 60:.1f} min",
        f"pruning runs: {runs} = {len(s.seeds)} seeds x {len(s.targets)} targets x {len(s.methods)} methods"
        + (f" - {reused} reused from the cache" if reused else "") + ", each "
        f"{s.reg_epochs:g} + {s.recover_epochs:g} epochs, 4 evaluations, ~{RUN_OVERHEAD_S + latency_s:.0f} s "
        f"overhead and ORT timing = {run_s:.0f} s each, {runs * run_s / 60:.1f} min",
        f"fair chance: {fair_runs} phases of {s.fairness_epochs:g} epoch = {fair_s / 60:.1f} min",
        f"estimated total: {total / 60:.1f} min"
        + (f" - OVER the {BUDGET_MIN} min budget (a busy machine? see --threads, --dense-only)"
           if total > 60 * BUDGET_MIN and not s.quick else ""),
    ]
    return lines, total


def measure_unit_costs(s: CompareSettings, splits, device) -> tuple[UnitCosts, dict[int, float]]:
    """Unit costs at the fastest torch thread count: `--threads` if given, else the faster of torch's
    default and 1 (on 2 shared cores, 2 threads next to another busy job measured 11x slower than 1).
    Leaves torch at that count; returns the costs and the seconds per step of every count tried."""
    import torch

    from catalyst_deploy.data import make_loaders
    from compare_dense import time_training

    loaders = make_loaders(splits, batch_size(), seed=0)
    candidates = [s.threads] if s.threads else sorted({torch.get_num_threads(), 1}, reverse=True)
    timings = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        timings[threads] = time_training(tuple(s.widths), loaders, device)
    best = min(timings, key=lambda n: timings[n][0])
    torch.set_num_threads(best)
    per_epoch = min(len(loaders[0]), s.steps_per_epoch or len(loaders[0]))
    units = UnitCosts(*timings[best], per_epoch, len(loaders[1]), threads=best)
    return units, {n: round(t[0], 4) for n, t in timings.items()}


@functools.cache
def base_config():
    """The recipe's PruneConfig: batch size, momentum, weight decay and LR shared by every phase here."""
    from catalyst_deploy.api import load_config

    return load_config(RECIPE, model="zoo:small_resnet")


def batch_size() -> int:
    return base_config().batch_size


# ---- the pruning runs ------------------------------------------------------------------------------
def prune_config(s: CompareSettings, model_path: Path, method: str, target: float, seed: int, record_every: int = 0):
    """The PruneConfig of one run: the recipe's optimizer settings, this comparison's budget."""
    from catalyst_deploy.api import load_config

    return load_config(RECIPE, model=str(model_path), data=s.data, target_flops=f"{target:g}", method=method,
                       out=s.cache / "runs" / f"{method}_t{target:g}_s{seed}", overwrite=True,
                       reg_epochs=s.reg_epochs, recover_epochs=s.recover_epochs, steps_per_epoch=s.steps_per_epoch,
                       train_limit=s.train_limit, test_limit=s.test_limit, seed=seed, device=s.device,
                       record_every=record_every if method == "catalyst" else 0)


def ort_cpu_latency_ratios(dense, pruned, sample_shape: tuple[int, ...], s: CompareSettings) -> dict[str, float | None]:
    """p50 latency pruned / dense per batch size on ONNX Runtime CPU (catalyst_deploy.api.bench: both
    sessions timed in turn, intra-op spinning off). None where the backend failed."""
    from catalyst_deploy import api
    from catalyst_deploy.bench.harness import BenchOptions

    options = BenchOptions(backends=("ort-cpu",), batches=tuple(s.latency_batches), input_shape=sample_shape,
                           threads=s.threads, min_time_s=s.latency_min_time, min_runs=s.latency_runs)
    report = api.bench(pruned, dense, options)
    return {str(b): _rounded(report.latency_ratio("ort-cpu", b), 4) for b in s.latency_batches}


def record_from_report(report: dict, method: str, target: float, seed: int) -> dict:
    """The compare.json record of one run (issue 4's fields, then extras)."""
    acc = report["accuracy"]
    record = {"method": method, "target_flops": target, "seed": seed, "macs_ratio": report["macs"]["ratio"],
              "acc_dense": acc["dense"], "acc_after_reg": acc["after_regularization"],
              "acc_after_surgery": acc["after_surgery"], "acc_final": acc["final"],
              "ort_cpu_latency_ratio": None, "params_ratio": report["params"]["ratio"],
              "params_pruned": report["params"]["pruned"], "params_dense": report["params"]["dense"],
              "channels_removed": report["channels_removed"], "channels_total": report["channels_total"],
              "seconds": report["seconds"].get("total")}
    if method == "catalyst":
        record.update(catalyst_fields(report))
    return record


def catalyst_fields(report: dict) -> dict:
    """Bifurcation margins (at the freeze and at the cut), the share of clearly decided channels, and
    the controller's freeze."""
    from catalyst_deploy.report import bifurcation_margin

    cut = report["log_c_at_cut"]
    pruned = set(report["pruned_channels"])
    mask = [i in pruned for i in range(len(cut))]
    at_freeze = report.get("log_c_at_freeze")
    cat = report["catalyst"]
    return {"bifurcation_margin": _rounded(report.get("bifurcation_margin"), 3),
            "bifurcation_margin_at_freeze": _rounded(bifurcation_margin(at_freeze, mask), 3) if at_freeze else None,
            "decided_share": round(sum(abs(v) > math.log(10) for v in cut) / len(cut), 4),
            "frozen_at_step": cat.get("frozen_at_step"), "freeze_forced": cat.get("freeze_forced"),
            "frozen_at_zero": cat.get("frozen_at_zero")}


def run_one(s: CompareSettings, dense, method: str, target: float, record_every: int) -> tuple[dict, dict | None]:
    """Prune `dense` with `method` to `target`, time it on ORT; returns (record, report). A failed run
    gives a record with `error` (the comparison goes on) and no report."""
    from catalyst_deploy.api import prune
    from catalyst_deploy.errors import CatalystDeployError
    from catalyst_deploy.models import load_model
    from compare_dense import load_dense

    cfg = prune_config(s, dense.path, method, target, dense.seed, record_every)
    key = run_key(s, cfg, dense)
    if method in s.reuse and (cached := cached_run(cfg.out, key)) is not None:
        return cached
    try:
        report = prune(cfg, log=lambda line: print(f"    {line}", flush=True))
    except Exception as err:  # recorded, not raised: one broken method must not lose an hour of the others' runs
        traceback.print_exc()
        message = str(err) if isinstance(err, CatalystDeployError) else f"{type(err).__name__}: {err}"
        return {"method": method, "target_flops": target, "seed": dense.seed, "error": message}, None
    record = record_from_report(report, method, target, dense.seed)
    latency = ort_cpu_latency_ratios(load_dense(dense), load_model(str(cfg.out / "pruned.pt")),
                                     tuple(report["input_shape"][1:]), s)
    record["ort_cpu_latency_ratio_by_batch"] = latency
    record["ort_cpu_latency_ratio"] = latency.get("1", next(iter(latency.values()), None))
    from results_file import git_commit

    made = {"commit": git_commit(), "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    run_record(cfg.out).write_text(json.dumps({"key": key, "made": made, "record": record}))  # + prune's report.json
    return record, report


def run_record(out: Path) -> Path:
    """What --reuse reads back: beside the run's output folder (the folder holds only what prune wrote)."""
    return out.with_name(out.name + ".compare_run.json")


def run_key(s: CompareSettings, cfg, dense) -> dict:
    """Everything a run's record depends on, except the code: its prune config (output folder aside),
    the dense model's cache file and the latency options."""
    from catalyst_deploy.pipeline import _jsonable

    config = _jsonable(cfg)
    return comparable(json.loads(json.dumps({"config": config, "dense": Path(dense.path).name, "threads": s.threads,
                                             "latency": [s.latency_batches, s.latency_min_time, s.latency_runs]})))


def comparable(key: dict) -> dict:
    """The part of a run key that must match: not the output folder, and Catalyst's settings only for
    Catalyst's runs (a baseline's run stays valid while Catalyst's schedule is tuned)."""
    drop = {"out", "overwrite"} | (set() if key["config"].get("method") == "catalyst" else {"catalyst", "record_every"})
    return {**key, "config": {k: v for k, v in key["config"].items() if k not in drop}}


def reusable_runs(s: CompareSettings, recipe, record_every: int) -> int:
    """How many of this comparison's runs `--reuse` will take from the cache."""
    count = 0
    for seed in s.seeds:
        dense = SimpleNamespace(path=s.cache / f"{recipe.cache_name(seed)}.pt")
        for target in s.targets:
            for method in set(s.methods) & set(s.reuse):
                cfg = prune_config(s, dense.path, method, target, seed, record_every)
                count += cached_run(cfg.out, run_key(s, cfg, dense), quiet=True) is not None
    return count


def cached_run(out: Path, key: dict, quiet: bool = False) -> tuple[dict, dict] | None:
    """(record, report) of an earlier run with the same key, the record marked `reused` with the commit
    and date it was made at; None when there is none."""
    path = run_record(out)
    if not (path.is_file() and (out / "report.json").is_file()):
        return None
    saved = json.loads(path.read_text())
    if "key" not in saved or comparable(saved["key"]) != key:
        if not quiet:
            print(f"    not reusing {path}: made with other settings", flush=True)
        return None
    if not quiet:
        print(f"    reusing {path} (made at commit {saved['made']['commit']}, {saved['made']['date']})", flush=True)
    return {**saved["record"], "reused": saved["made"]}, json.loads((out / "report.json").read_text())


def run_grid(s: CompareSettings, dense_models: list, record_every: int, started: float) -> tuple[list[dict], list[dict]]:
    """Every (seed, target, method) run; returns the records and the bifurcation panels (Catalyst, first seed)."""
    records, panels = [], []
    todo = [(d, t, m) for d in dense_models for t in s.targets for m in s.methods]
    for i, (dense, target, method) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {method} to {target:g} FLOPs, seed {dense.seed}", flush=True)
        t0 = time.time()
        record, report = run_one(s, dense, method, target, record_every)
        records.append(record)
        s.out.mkdir(parents=True, exist_ok=True)
        (s.out / "compare.json").write_text(json.dumps(records, indent=1))  # so far: survives a crash, shows progress
        print(f"[{i}/{len(todo)}] {run_summary(record)} ({time.time() - t0:.0f} s; {(time.time() - started) / 60:.1f} min "
              f"so far)", flush=True)
        if report and method == "catalyst" and dense.seed == s.seeds[0] and report.get("c_trajectory"):
            panels.append(trajectory_panel(report, record))
    return records, panels


def run_summary(record: dict) -> str:
    if record.get("error"):
        return f"{record['method']} failed: {record['error']}"
    latency = record.get("ort_cpu_latency_ratio")
    return (f"{record['method']} {record['target_flops']:g} seed {record['seed']}: after regularization "
            f"{record['acc_after_reg']:.2f}, after surgery {record['acc_after_surgery']:.2f}, final {record['acc_final']:.2f}; "
            f"MACs ratio {record['macs_ratio']:.3f}, ORT latency ratio b1 "
            + (f"{latency:.3f}" if latency is not None else "n/a"))


def trajectory_panel(report: dict, record: dict) -> dict:
    from compare_report import margin_text

    return {"title": f"Catalyst, target {record['target_flops']:g}, seed {record['seed']}\nmargin (log10 c) at the "
                     f"freeze {margin_text(record.get('bifurcation_margin_at_freeze'), True)}, at the cut "
                     f"{margin_text(record.get('bifurcation_margin'), True)}",
            "trajectory": report["c_trajectory"], "pruned": report["pruned_channels"],
            "frozen_at": record.get("frozen_at_step")}


def record_interval(s: CompareSettings, train_size: int) -> int:
    """Steps between two recordings of c, so that a Catalyst phase gives about TRAJECTORY_POINTS of them."""
    per_epoch = math.ceil(train_size / batch_size())
    steps = s.reg_epochs * min(per_epoch, s.steps_per_epoch or per_epoch)
    return max(1, int(steps // TRAJECTORY_POINTS))


# ---- fair chance -----------------------------------------------------------------------------------
def run_fairness(s: CompareSettings, dense, splits, device) -> tuple[list[dict], dict]:
    """Every (factor, setting, method) of the fair-chance experiment on the first seed's dense model;
    returns the records and the rescaled models' test accuracies (the function check)."""
    import torch

    from catalyst_deploy.data import make_loaders
    from compare_dense import load_dense
    from compare_fairness import SETTINGS, fairness_record, rescaled_copy

    loaders = make_loaders(splits, batch_size(), seed=dense.seed)
    example = torch.randn(1, splits.info.channels, *splits.info.image_size)
    model = load_dense(dense)
    records, check = [], {}
    for factor in s.fairness_factors:
        rescaled, code, check[factor] = rescaled_copy(model, example, factor, dense.seed, loaders[1], device)
        for setting in SETTINGS:
            for method in s.fairness_methods:
                cfg = prune_config(s, dense.path, method, s.fairness_target, dense.seed)
                record = fairness_record(rescaled, code, cfg, setting, factor, loaders, example, s.fairness_epochs, device)
                records.append(record.to_dict())
                print(f"fair chance k={factor:g} {setting} {method}: pruned {100 * record.share_rescaled:.1f}% of the "
                      f"rescaled, {100 * record.share_untouched:.1f}% of the untouched channels", flush=True)
    return records, check


# ---- outputs ---------------------------------------------------------------------------------------
def machine_lines(load_before: float) -> list[str]:
    import onnxruntime
    import torch

    from results_file import git_commit

    return [f"machine: {platform.machine()}, nproc {len(os.sched_getaffinity(0))} ({cpu_model()}); torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}; "
            f"commit {git_commit()}; load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
            f"(other jobs share these cores)"]


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or "unknown CPU")


def about_lines(s: CompareSettings, units: UnitCosts, estimate_s: float, wall_s: float, load_before: float) -> list[str]:
    cfg = base_config()
    limits = f"train subset {s.train_limit or 'all'}, test subset {s.test_limit or 'all'}" + (
        f", at most {s.steps_per_epoch} steps per epoch" if s.steps_per_epoch else "")
    return [
        *machine_lines(load_before),
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; wall time {wall_s / 60:.1f} min "
        f"(estimated at the start: {estimate_s / 60:.1f} min from {units.epoch_s:.0f} s per training epoch)",
        f"data: `{s.data}` ({limits}); model: small ResNet, widths {s.widths}, stem stride 2",
        f"dense training: {s.dense_epochs:g} epochs, SGD lr {s.dense_lr:g} cosine, momentum {cfg.momentum:g}, "
        f"weight decay {cfg.weight_decay:g}, batch {cfg.batch_size}, random crop + flip; seeds {s.seeds}",
        f"every method: {s.reg_epochs:g} epoch(s) regularized phase (plain fine-tuning for the one-shot l1/taylor/random) "
        f"+ {s.recover_epochs:g} epoch(s) recovery, lr {cfg.lr:g} cosine per phase, recipe `{RECIPE}`, "
        f"torch-pruning surgery to the target with round_to 8",
        f"ORT CPU latency: p50 pruned / p50 dense, batches {s.latency_batches}, both sessions timed in turn, "
        f">= {s.latency_runs} runs and {s.latency_min_time:g} s each; batch 1 goes into `ort_cpu_latency_ratio`",
    ]


def write_outputs(s: CompareSettings, run: dict, records, dense, fairness, check, panels) -> None:
    import statistics

    from compare_plots import plot_accuracy_vs_flops, plot_bifurcation_trajectories, plot_fairness
    from compare_report import SECTION, format_section
    from results_file import write_section

    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "compare.json").write_text(json.dumps(records, indent=1))
    if fairness:
        (s.out / "compare_fairness.json").write_text(json.dumps(fairness, indent=1))
    if any(not r.get("error") for r in records):
        plot_accuracy_vs_flops(records, statistics.mean(d["accuracy"] for d in dense), s.out / "accuracy_vs_flops.png")
    if fairness:
        plot_fairness(fairness, s.out / "fairness.png")
    if panels:
        plot_bifurcation_trajectories(panels, s.out / "bifurcation_trajectories.png")
    write_section(SECTION, format_section(run, records, dense, fairness, check), s.out / "RESULTS.md")


def _rounded(value, digits: int):
    return None if value is None else round(float(value), digits)


def plan_budget(s: CompareSettings, splits, device, recipe) -> tuple[CompareSettings, UnitCosts, float, str]:
    """Measure the unit costs (choosing the thread count), print the budget plan; returns the settings
    with the chosen thread count, the estimated seconds and the probe's line."""
    units, probe = measure_unit_costs(s, splits, device)
    s = dataclasses.replace(s, threads=units.threads)  # ONNX Runtime gets the same count
    to_train = sum(not (s.cache / f"{recipe.cache_name(seed)}.pt").is_file() for seed in s.seeds)
    reused = reusable_runs(s, recipe, record_interval(s, len(splits.train)))
    plan, estimate = budget_lines(s, units, to_train, reused)
    threads = f"torch and ORT threads: {units.threads}, the faster in a training-step probe: " + ", ".join(
        f"{n} thread(s) {t:.3f} s/step" for n, t in probe.items())
    print("\n".join(["budget plan:", f"  {threads}", *(f"  {line}" for line in plan)]), flush=True)
    return s, units, estimate, threads


def main(argv: list[str] | None = None) -> int:
    from catalyst_deploy.data import load_dataset, make_loaders
    from catalyst_deploy.train import resolve_device
    from compare_dense import DenseRecipe, cached_dense_model

    s = parse_settings(argv)
    started, load_before = time.time(), os.getloadavg()[0]
    device = resolve_device(s.device)
    splits = load_dataset(s.data, train_limit=s.train_limit, test_limit=s.test_limit)
    cfg = base_config()
    recipe = DenseRecipe(tuple(s.widths), s.dense_epochs, s.dense_lr, cfg.momentum, cfg.weight_decay, cfg.batch_size,
                         s.steps_per_epoch, s.train_limit, s.data)
    s, units, estimate, threads = plan_budget(s, splits, device, recipe)
    dense = [cached_dense_model(recipe, seed, make_loaders(splits, batch_size(), seed=seed), device, s.cache)
             for seed in s.seeds]
    if s.dense_only:
        print(f"dense models cached in {s.cache} ({(time.time() - started) / 60:.1f} min)")
        return 0
    records, panels = run_grid(s, dense, record_interval(s, len(splits.train)), started)
    fairness, check = run_fairness(s, dense[0], splits, device) if s.fairness_factors and s.fairness_methods else ([], {})
    dense_rows = [{"seed": d.seed, "accuracy": d.accuracy, "curve": d.curve, "train_seconds": d.train_seconds,
                   "cached": d.cached} for d in dense]
    run = {"quick": s.quick, "command": s.command, "targets": s.targets, "methods": s.methods,
           "about": about_lines(s, units, estimate, time.time() - started, load_before) + [threads],
           "fairness_about": fairness_about(s, dense[0].seed)}
    write_outputs(s, run, records, dense_rows, fairness, check, panels)
    print(f"wrote {s.out / 'compare.json'}, the plots and the compare section of {s.out / 'RESULTS.md'} "
          f"in {(time.time() - started) / 60:.1f} min", flush=True)
    return 1 if all(r.get("error") for r in records) else 0


def fairness_about(s: CompareSettings, seed: int) -> str:
    return (f"Seed {seed}'s dense model; every conv producing a chosen channel (and feeding a BN) scaled by k, the BN's "
            f"running statistics with it. Each method then runs its regularized phase for {s.fairness_epochs:g} epoch "
            f"and decides a prune set for {s.fairness_target:g} FLOPs (no rounding). *held*: conv weights frozen "
            f"(BN, head and the method train) - the decision rule alone; *trainable*: everything trains - SGD then "
            f"gives a channel scaled by k an effective learning rate scaled by 1/k² (BN makes the conv "
            f"scale-invariant), which changes that channel's training whatever the method.")


if __name__ == "__main__":
    raise SystemExit(main())
