"""Prepared GPU check for one H100/H200, under 8 minutes (issue "Export and real latency", item 5).

1. fine-tuning throughput (images/s) of ResNet-50 on random data, AMP bf16, channels_last, SGD: plain,
   and with Catalyst's gates attached and its per-step proximal update (`methods.catalyst_gated`);
2. ResNet-50 pruned to half its MACs on the CPU by the package's one pruning path (graph.ChannelGraph ->
   allocation.Budget.select -> plan.apply_plan, L2 ranking), round_to 8 (`environment.channel_multiple(needs_gpu=True)`);
3. GPU latency dense vs pruned at batch 1 and 64 through catalyst_deploy.bench: torch eager, torch CUDA
   graphs, ONNX Runtime CUDA (if onnxruntime-gpu is installed), TensorRT fp16 (if tensorrt imports);
4. when tensorrt imports: `catalyst-deploy prune torchvision:resnet18 ... --export onnx,trt --bench` end to end
   on the demo data at 224x224, and the latency cells of its report.json (every backend the exported files run on);
5. the TensorRT/GPU tests of tests/test_exporters.py.

Every part runs in its own try/except and reports why it was skipped or failed; the rest still runs.
Prints a markdown table and, when $OUT is set, writes $OUT/gpu_check.md and $OUT/gpu_check.json (and
$OUT/bench/, $OUT/prune-trt/ with the CLI run's report.json and bench files).

    bash benchmarks/gpu_check.sh                          # from the repository root, everything
    bash benchmarks/gpu_check.sh --parts prune-trt,tests  # a rerun of some parts
    python benchmarks/gpu_check.py --smoke                # no GPU: the CPU parts at a tiny size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

PARTS = ("train", "train-catalyst", "prune", "latency", "prune-trt", "tests")
START = time.time()
ROWS: list[dict] = []
BUDGET = {"s": 450.0}  # leave room under the 8-minute limit for start-up and writing (--budget-s)


def record(part: str, result: str, detail: str = "") -> None:
    ROWS.append({"part": part, "result": result, "detail": detail, "at_s": round(time.time() - START, 1)})
    print(f"[{ROWS[-1]['at_s']:6.1f}s] {part}: {result} {detail}", flush=True)


def left_s() -> float:
    return BUDGET["s"] - (time.time() - START)


def run_part(part: str, fn, min_left_s: float = 30):
    """Run one part; a failure or a short budget becomes a row, never an abort."""
    if left_s() < min_left_s:
        record(part, "skipped", f"time budget: {left_s():.0f} s left, needs {min_left_s:.0f} s")
        return None
    try:
        return fn()
    except Exception as err:  # each part reports its own failure and the script goes on
        record(part, "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        traceback.print_exc()
        return None


def environment(need_gpu: bool = True) -> bool:
    """Versions and devices; raises (row: failed) when there is no CUDA GPU, which stops the script."""
    import torch

    record("environment", "torch " + torch.__version__, f"CUDA {torch.version.cuda}, "
           f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    for name in ("onnxruntime", "tensorrt"):
        try:
            module = __import__(name)
            extra = f" providers {module.get_available_providers()}" if name == "onnxruntime" else ""
            record("environment", f"{name} {module.__version__}", extra)
        except ImportError as err:
            record("environment", f"{name} missing", str(err))
    if need_gpu and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch: nothing else to check")
    return True


# ---- 1. training throughput -----------------------------------------------------------------------
def training_throughput(args, with_catalyst: bool, warmup: int = 10) -> None:
    """Images/s of SGD steps of torchvision `args.model` (bf16 autocast, channels_last) on random data."""
    import torch
    import torchvision

    from catalyst_deploy.run.train import PhaseSettings, make_optimizer

    model = torchvision.models.get_model(args.model, num_classes=1000).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(args.train_batch, 3, args.size, args.size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.train_batch,), device="cuda")
    method = catalyst_method(model, x[:1], args.model) if with_catalyst else None
    # after the gates are attached: the optimizer must hold the gates, not the parameters they now own
    settings = PhaseSettings(1, 0.01, 0.9, 5e-4)
    optimizer = (make_optimizer(model, settings, method.param_overrides()) if method
                 else make_optimizer(model, settings))
    for step in range(warmup + args.steps):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        sgd_step(model, optimizer, x, y, method)
    torch.cuda.synchronize()
    ips = args.steps * args.train_batch / (time.perf_counter() - start)
    record(f"train {args.model}" + (" + catalyst" if with_catalyst else ""), f"{ips:.0f} images/s",
           f"batch {args.train_batch}, {args.size}x{args.size}, bf16 autocast, channels_last, {args.steps} steps")


def sgd_step(model, optimizer, x, y, method=None) -> None:
    """One training step as the pipeline takes it: backward, before_step, SGD, the penalty's update."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if method:
        method.before_step()
    optimizer.step()
    if method:
        method.apply_penalty(optimizer.param_groups[0]["lr"])


def catalyst_method(model, example, name: str):
    """Catalyst (`methods.make_method` with the default settings) started on `model`: its gates attached
    as parametrizations, at the controller's starting strength (no channel collapses in a few steps)."""
    from catalyst_deploy.bench.environment import channel_multiple
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.config import load_config
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.surgery.macs import count_macs
    from catalyst_deploy.methods import make_method

    cfg = load_config(model=f"torchvision:{name}", method="catalyst")
    graph = ChannelGraph(model, example)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, cfg.target.macs(count_macs(model, example)[0]),
                    channel_multiple(needs_gpu=True), cfg.max_layer_ratio)
    method = make_method(cfg)
    method.start(graph, budget, steps=1)  # its controller sets the starting strength; no step reaches a check
    return method


# ---- 2. pruning on the CPU ------------------------------------------------------------------------
def prune_to_share(model, example, share: float, round_to: int):
    """The package's one pruning path: cut `model` in place to <= `share` of its MACs, lowest L2 first."""
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph, channel_norms
    from catalyst_deploy.surgery.macs import count_macs
    from catalyst_deploy.surgery.plan import apply_plan

    graph = ChannelGraph(model, example)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, share * count_macs(model, example)[0], round_to)
    priority = -channel_norms(graph.producer_slices(), graph.num_channels)
    return apply_plan(model, graph.plan_for(budget.select(priority)))


def pruned_model(args):
    """(dense, pruned) torchvision `args.model` on the CPU; pruned to <= 0.5 MACs, L2, GPU channel multiple."""
    import copy

    import torch
    import torchvision

    from catalyst_deploy.bench.environment import channel_multiple
    from catalyst_deploy.surgery.macs import count_macs

    torch.manual_seed(0)
    dense = torchvision.models.get_model(args.model).eval()
    example = torch.randn(1, 3, args.size, args.size)
    round_to = channel_multiple(needs_gpu=True)
    pruned = prune_to_share(copy.deepcopy(dense), example, 0.5, round_to).eval()
    before, after = count_macs(dense, example)[0], count_macs(pruned, example)[0]
    record(f"prune {args.model}", f"MACs ratio {after / before:.3f}",
           f"{before / 1e9:.2f}G -> {after / 1e9:.2f}G, L2, round_to {round_to}")
    return dense, pruned


# ---- 3. GPU latency --------------------------------------------------------------------------------
def gpu_latency(args, dense, pruned) -> None:
    """Dense vs pruned through the project's own benchmark harness, batch 1 and 64."""
    from catalyst_deploy.bench.harness import BenchOptions, run_benchmark
    from catalyst_deploy.bench.report import write_bench_files

    options = BenchOptions(backends=("torch", "torch-cudagraph", "ort-cuda", "trt"), batches=(1, 64),
                           input_shape=(3, args.size, args.size), min_time_s=1.0, min_runs=50, precision="fp16")
    report = run_benchmark(pruned, dense, options, progress=lambda text: record("latency", "running", text))
    for row in report.rows:
        s = row.stats
        detail = (f"p50 {s.p50_ms:.3f} ms, p99 {s.p99_ms:.3f} ms, {s.throughput_ips:.0f} img/s" if s else row.error)
        ratio = report.latency_ratio(row.backend, row.batch) if row.model == "pruned" else None
        record(f"latency {row.backend} b{row.batch} {row.model}", "ok" if row.ok else "failed",
               detail + (f", pruned/dense {ratio:.3f}" if ratio else ""))
    if os.environ.get("OUT"):
        write_bench_files(report, Path(os.environ["OUT"]) / "bench")


# ---- 4. the CLI end to end with a TensorRT export ------------------------------------------------
def prune_trt_command(args, out: Path) -> list[str]:
    """`catalyst-deploy prune` (by this interpreter) exporting ONNX and a TensorRT engine and timing both
    against the dense model: a short one-shot run (l1), its latency is what is looked at."""
    return [sys.executable, "-m", "catalyst_deploy", "prune", args.cli_model, "--data", "demo",
            "--input-shape", args.cli_shape, "--method", "l1", "--target-flops", "0.5", "--reg-epochs", "1",
            "--recover-epochs", "1", "--steps-per-epoch", "10", "--device", "cuda", "--export", "onnx,trt",
            "--bench", "--bench-batch", "1,8", "--out", str(out), "--json"]


def prune_trt(args) -> None:
    """Run `prune_trt_command` when tensorrt imports; a row per latency cell of its report.json."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as err:
        record("prune-trt", "skipped", f"tensorrt does not import: {err}")
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-prune-") as work:
        out = Path(work) / "run"
        done = subprocess.run(prune_trt_command(args, out), capture_output=True, text=True,
                              timeout=max(30, left_s() - 20), check=False)
        last = done.stderr.strip().splitlines()[-1:] or [""]
        record("prune-trt", f"exit {done.returncode}", last[0])
        report = json.loads((out / "report.json").read_text())  # written also when an export failed (exit 1)
        record_prune_report(report)
        keep_run_files(out)


def record_prune_report(report: dict) -> None:
    """Rows for the run's exports and for each latency cell (backend, batch: dense / pruned ms, ratio)."""
    record("prune-trt", f"MACs ratio {report['macs']['ratio']:.3f}", f"accuracy {report['accuracy']}")
    for fmt, entry in report.get("exports", {}).items():
        record(f"prune-trt export {fmt}", "failed" if "error" in entry else "ok",
               entry.get("error") or f"max abs diff {entry['max_abs_diff']:.3g} (atol {entry['atol']:.3g})")
    latency = report.get("latency") or {}
    if "error" in latency or not latency.get("cells"):
        record("prune-trt latency", "none", str(latency.get("error", "no cells")))
    for cell in latency.get("cells", []):
        record(f"prune-trt latency {cell['backend']} b{cell['batch']}", f"ratio {cell['ratio']:.3f}",
               f"dense {cell['dense_ms']:.3f} ms, pruned {cell['pruned_ms']:.3f} ms")


def keep_run_files(run: Path) -> None:
    """Copy the run's small files (report, bench) to $OUT/prune-trt; the models stay behind (too large)."""
    if not os.environ.get("OUT"):
        return
    dest = Path(os.environ["OUT"]) / "prune-trt"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "bench.json", "bench.md", "latency.png"):
        if (run / name).is_file():
            shutil.copy(run / name, dest / name)


# ---- 5. tests and outputs --------------------------------------------------------------------------
def gpu_tests() -> None:
    """The tensorrt/gpu-marked exporter tests, in a subprocess with its own timeout."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "tests/test_exporters.py"],
                          capture_output=True, text=True, timeout=max(30, left_s()), check=False)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    record("pytest -m 'gpu or tensorrt'", "passed" if done.returncode == 0 else f"exit {done.returncode}", tail)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])


def write_outputs() -> None:
    lines = ["| part | result | detail | at (s) |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['result']} | {r['detail']} | {r['at_s']} |" for r in ROWS]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(table)
        (out / "gpu_check.json").write_text(json.dumps(ROWS, indent=1))


def smoke(args) -> None:
    """No GPU needed: the CPU parts at a tiny size (model building, Catalyst's gates and one update, pruning
    on the CPU, the CLI command), so that the GPU run does not fail on an API change."""
    import torch

    torch.set_num_threads(1)
    run_part("environment", lambda: environment(need_gpu=False), min_left_s=0)
    run_part("catalyst", lambda: smoke_catalyst(args), min_left_s=0)
    run_part("prune", lambda: pruned_model(args), min_left_s=0)
    record("prune-trt command", "built", " ".join(prune_trt_command(args, Path("OUT/prune-trt"))[1:]))


def smoke_catalyst(args) -> None:
    """Catalyst started on a CPU model and one pipeline step with it (autocast bf16 on the CPU)."""
    import torch
    import torchvision

    from catalyst_deploy.run.train import PhaseSettings, make_optimizer

    model = torchvision.models.get_model(args.model, num_classes=1000)
    x, y = torch.randn(2, 3, args.size, args.size), torch.randint(0, 1000, (2,))
    method = catalyst_method(model, x[:1], args.model)
    settings = PhaseSettings(1, 0.01, 0.9, 5e-4)
    sgd_step(model, make_optimizer(model, settings, method.param_overrides()), x, y, method)
    record("catalyst", f"{method.graph.num_channels} gated channels, {method.steps} update(s)",
           f"{len(method.gates.attached)} gated parameters")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}")
    ap.add_argument("--model", default="resnet50", help="torchvision model of the training, pruning and latency parts")
    ap.add_argument("--size", type=int, default=224, help="input height and width of those parts")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps (after 10 warm-up steps)")
    ap.add_argument("--cli-model", default="torchvision:resnet18", help="model of the prune-trt part")
    ap.add_argument("--cli-shape", default="1,3,224,224", help="its --input-shape")
    ap.add_argument("--budget-s", type=float, default=BUDGET["s"], help="stop starting parts after this many seconds")
    ap.add_argument("--smoke", action="store_true",
                    help="no GPU: the CPU parts only (use with --model resnet18 --size 32)")
    args = ap.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}")
    return args


def main() -> None:
    args = parse_args()
    BUDGET["s"] = args.budget_s
    if args.smoke:
        smoke(args)
        write_outputs()
        return
    if not run_part("environment", environment, min_left_s=0):
        write_outputs()
        return
    parts = args.parts.split(",")
    if "train" in parts:
        run_part("train", lambda: training_throughput(args, False), min_left_s=60)
    if "train-catalyst" in parts:
        run_part("train + catalyst", lambda: training_throughput(args, True), min_left_s=60)
    models = run_part("prune", lambda: pruned_model(args), min_left_s=60) if {"prune", "latency"} & set(parts) else None
    if models and "latency" in parts:
        run_part("latency", lambda: gpu_latency(args, *models), min_left_s=90)
    if "prune-trt" in parts:
        run_part("prune-trt", lambda: prune_trt(args), min_left_s=90)
    if "tests" in parts:
        run_part("gpu tests", gpu_tests, min_left_s=40)
    write_outputs()


if __name__ == "__main__":
    main()
