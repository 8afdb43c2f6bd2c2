"""Core-pipeline numbers (issue 2), each measured in one run on this machine:

1. `catalyst-deploy demo` (the pretrained small ResNet shipped in the package, Catalyst to half its MACs,
   ONNX export, ORT CPU benchmark): wall time, MACs, params, accuracy at every stage, latency dense vs
   pruned at batch 1 and 8, all read back from the run's report.json.
2. Catalyst update overhead per training step, each form: torchvision resnet50, batch 8, 224x224, CPU: a
   plain step against a step with the method attached, its forward-pass terms or gates (paired differences),
   `before_step` and `after_step` timed apart.

The former `fashion` section (full Fashion-MNIST, small ResNet, --target-flops 0.5) is gone:
benchmarks/compare.py covers full Fashion-MNIST for every method now.

    python benchmarks/pipeline.py [--only demo,overhead]
    python benchmarks/pipeline.py --quick          # smoke run: demo capped at 2 steps per epoch, overhead on
                                                   # resnet18 at 32x32; prints only, RESULTS.md untouched
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_file import git_commit, machine_line, write_section  # noqa: E402
from catalyst_deploy.methods.catalyst import LITERAL  # noqa: E402


# ---- demo -----------------------------------------------------------------------------------------
def bench_demo(steps_per_epoch: int | None = None, threads: int | None = None) -> str:
    """Run `catalyst-deploy demo` in a fresh process (the user's experience, start-up included) and
    tabulate its report.json. `threads` caps torch's threads there (OMP_NUM_THREADS); None: its default."""
    import os

    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "demo"
        # `python -m catalyst_deploy` is the console script's entry point, run by this interpreter, so the
        # numbers come from the same environment whatever PATH holds
        command = [sys.executable, "-m", "catalyst_deploy", "demo", "--out", str(out), "--json"]
        if steps_per_epoch:
            command += ["--steps-per-epoch", str(steps_per_epoch)]
        start = time.perf_counter()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"catalyst-deploy demo exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        report = json.loads((out / "report.json").read_text())
    return demo_section(report, wall, steps_per_epoch)


def demo_section(r: dict, wall: float, steps_per_epoch: int | None) -> str:
    """The demo's one table: counts, accuracy per stage, ORT CPU latency per batch, dense vs pruned."""
    c, a, cells = r["config"], r["accuracy"], _ort_cells(r)
    capped = f", capped at {steps_per_epoch} steps per epoch" if steps_per_epoch else ""
    head = ["MACs (M) dense / pruned (ratio)", "params (K) dense / pruned (ratio)", "acc. dense",
            "after regularization", "right after the cut", "final"]
    row = [_counts(r["macs"], 1e6), _counts(r["params"], 1e3),
           *(f"{a[k]:.2f}" for k in ("dense", "after_regularization", "after_surgery", "final"))]
    for cell in cells:
        head.append(f"ORT CPU b{cell['batch']} ms dense / pruned (ratio)")
        row.append(f"{cell['dense_ms']:.2f} / {cell['pruned_ms']:.2f} (**{cell['ratio']:.3f}**)")
    return "\n".join([
        "### `catalyst-deploy demo`", "",
        f"Wall time {wall:.0f} s (target: under 5 minutes), start-up included. `{c['model']}` (pretrained, shipped "
        f"in the package) on the bundled subset: {c['method']} {c['reg_epochs']:g} regularized + "
        f"{c['recover_epochs']:g} recovery epochs to --target-flops {c['target_flops']}{capped}; ONNX export, "
        "timed against the dense export on ONNX Runtime CPU (p50, interleaved).", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |", "",
        "Phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + ".",
    ])


def _ort_cells(report: dict) -> list[dict]:
    """The report's ort-cpu latency cells by batch ([] when the benchmark did not run)."""
    cells = (report.get("latency") or {}).get("cells") or []
    return sorted((c for c in cells if c["backend"] == "ort-cpu"), key=lambda c: c["batch"])


def _counts(counts: dict, unit: float) -> str:
    return f"{counts['dense'] / unit:.1f} / {counts['pruned'] / unit:.1f} ({counts['ratio']:.3f})"


# ---- Catalyst update overhead --------------------------------------------------------------------
# (row, method, catalyst settings): the paper form read literally (LITERAL), the gated form, and the default (the
# rewind setting: its `center` check counts the target's set with a MACs count fitted at the start; docs/method.md)
FORMS = (("catalyst, read literally", "catalyst", LITERAL), ("catalyst-gated", "catalyst-gated", None),
         ("catalyst (default: rewind setting)", "catalyst", None))


def bench_overhead(name: str = "resnet50", batch: int = 8, size: int = 224, steps: int = 40) -> str:
    """For each Catalyst form: a plain SGD step and a step of a copy with the method attached, interleaved
    step by step in one process (alternating which goes first) so that both see the same machine load. The
    parts are timed apart: the forward and backward pass with the method's terms or gates, as the median
    of the differences between each attached pass and the plain pass beside it (pairs share the machine's
    state; a difference of two medians moved by +-1.5 points from run to run), and the method's own code,
    `before_step` and `after_step`, timed directly. `steps` is a multiple of both forms' check_every (10, 5),
    so the mean update carries each periodic look at the channels at its real share."""
    rows = []
    for form, method_name, settings in FORMS:
        plain, attached, method, x, y = overhead_models(name, batch, size, method_name, settings)
        plain_opt, attached_opt = sgd_for(plain), sgd_for(attached, method)
        times: dict[str, list[float]] = {"plain": [], "passes": [], "before": [], "update": []}
        for i in range(steps + 1):
            if i % 2:  # the order alternates: whichever model runs second may find warmer caches
                t_attached, t_before = train_step(attached, attached_opt, x, y, method)
                t_plain, _ = train_step(plain, plain_opt, x, y)
            else:
                t_plain, _ = train_step(plain, plain_opt, x, y)
                t_attached, t_before = train_step(attached, attached_opt, x, y, method)
            start = time.perf_counter()
            method.after_step(attached_opt.param_groups[0]["lr"], i)  # steps 1..steps are measured
            t_update = time.perf_counter() - start
            if i:  # the first step (0) warms up allocators and caches
                for key, value in zip(times, (t_plain, t_attached - t_before - t_plain, t_before, t_update)):
                    times[key].append(value)
        rows.append((form, method, {k: _median(v) for k, v in times.items()}, sum(times["update"]) / steps))
    return overhead_section(name, batch, size, steps, rows)


def overhead_models(name: str, batch: int, size: int, form: str, settings: dict | None = None):
    """(plain model, copy with the method attached, started method, x, y): the same random-init torchvision
    model twice, the copy started by the method on the pipeline's graph and budget."""
    import copy

    import torchvision

    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.config import load_config
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.surgery.macs import count_macs
    from catalyst_deploy.methods import make_method

    torch.manual_seed(0)
    plain = torchvision.models.get_model(name, num_classes=1000)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    attached = copy.deepcopy(plain)
    cfg = load_config(model=f"torchvision:{name}", method=form, catalyst=settings)  # a prune run's defaults
    graph = ChannelGraph(attached, x[:1])
    budget = Budget(tuple(graph.sizes), graph.trial_macs, cfg.target.macs(count_macs(attached, x[:1])[0]),
                    cfg.round_to, cfg.max_layer_ratio)
    method = make_method(cfg)
    # a long phase: the schedules stay at their first, small steps, so no channel is decided during the
    # measurement (the update's cost does not depend on its strength)
    start = time.perf_counter()
    method.start(graph, budget, steps=100_000)
    method.start_seconds = time.perf_counter() - start  # once per phase: for the default, the fit of its count
    return plain.train(), attached.train(), method, x, y


def sgd_for(model, method=None) -> torch.optim.SGD:
    """The pipeline's optimizer (`train.make_optimizer`) with the method's parameter overrides."""
    from catalyst_deploy.run.train import PhaseSettings, make_optimizer

    settings = PhaseSettings(1, 0.01, 0.9, 5e-4)
    if method is None:
        return make_optimizer(model, settings)
    return make_optimizer(model, settings, method.param_overrides())


def train_step(model, optimizer, x, y, method=None) -> tuple[float, float]:
    """Seconds of one forward + backward + SGD step (with the method's `before_step` when given), and of the
    `before_step` within it."""
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    before = time.perf_counter()
    if method is not None:
        method.before_step()
    before = time.perf_counter() - before
    optimizer.step()
    return time.perf_counter() - start, before


def overhead_section(name: str, batch: int, size: int, steps: int, rows: list) -> str:
    """The table: median milliseconds, and each cost as a share of the plain step (the passes: the extra
    forward/backward work of the method's terms or gates, median of paired differences; `before_step`;
    `after_step`, its median and its mean over the steps, which includes the schedule's periodic look at
    the channels; the update = before_step + mean after_step, the method's own code each step; total = the
    update + the passes)."""
    graph = rows[0][1].graph
    lines = [f"### Catalyst update overhead ({name}, batch {batch}, {size}x{size}, CPU, fp32)", "",
             f"{graph.num_channels} channels in {len(graph.groups)} groups. {steps} steps, the plain and the "
             f"attached model stepped in turn (alternating which goes first) in one process; "
             f"{torch.get_num_threads()} torch threads. The forward/backward cost of the method's terms or gates is "
             "the median of the differences between each attached pass and the plain pass beside it; the "
             "method's `before_step` and `after_step` are timed directly. `start` (not in the overhead): the "
             "method's set-up on the graph, for the default the fit of `center`'s MACs count by trial cuts.", "",
             "| form | plain step (fwd+bwd+SGD), median | the terms or gates in the step (paired) | `before_step` median | "
             "`after_step` median / mean | the update (`before_step` + mean `after_step`) | total overhead | "
             "`start`, once per phase |",
             "|---|---|---|---|---|---|---|---|"]
    for form, _method, med, update_mean in rows:
        plain = med["plain"]
        update = (med["before"] + update_mean) / plain
        total = update + med["passes"] / plain
        lines.append(f"| `{form}` | {1e3 * plain:.0f} ms | {1e3 * med['passes']:.1f} ms | "
                     f"{1e3 * med['before']:.1f} ms | {1e3 * med['update']:.1f} / {1e3 * update_mean:.1f} ms | "
                     f"**{100 * update:+.2f}%** (target < 5%) | {100 * total:+.2f}% | "
                     f"{_method.start_seconds:.1f} s |")
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


# ---- main -----------------------------------------------------------------------------------------
TITLES = {"demo": "the demo", "overhead": "Catalyst's overhead"}


def run_parts(names: list[str], quick: bool, threads: int | None) -> list[str]:
    """Each requested section, printed as it is done."""
    parts = {
        "demo": lambda: bench_demo(2 if quick else None, threads),
        "overhead": lambda: bench_overhead("resnet18", 2, 32, 10) if quick else bench_overhead(),
    }
    done = []
    for name in names:
        print(f"== {name}", flush=True)
        done.append(parts[name]())
        print(done[-1], flush=True)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="demo,overhead", help="comma-separated sections: demo, overhead")
    ap.add_argument("--quick", action="store_true", help="smoke run at a tiny size; implies --no-write")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads here and in the demo [torch's default]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only.split(",")
    unknown = [n for n in names if n not in ("demo", "overhead")]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}: choose from demo, overhead")
    start, header = time.perf_counter(), machine_line()
    parts = run_parts(names, args.quick, args.threads)
    if args.quick or args.no_write:
        return
    body = "\n\n".join([
        f"## Core pipeline: {' and '.join(TITLES[n] for n in names)} (`benchmarks/pipeline.py`)",
        f"Command: `python benchmarks/pipeline.py {' '.join(sys.argv[1:])}`; {date.today()}, commit {git_commit()}; "
        f"machine: {header}; total {time.perf_counter() - start:.0f} s.", *parts])
    write_section(f"pipeline-{args.only.replace(',', '-')}", body)


if __name__ == "__main__":
    main()
