"""Prepared GPU check for one H100/H200, under 8 minutes (issue "Export and real latency", item 5).

1. fine-tuning throughput (images/s) of ResNet-50 on random data, AMP bf16, channels_last, SGD: plain,
   and with the Catalyst per-step proximal update (catalyst_deploy.catalyst, skipped if absent);
2. ResNet-50 pruned to half its MACs (catalyst_deploy.surgery, round_to 8 for tensor cores);
3. GPU latency dense vs pruned at batch 1 and 64 through catalyst_deploy.bench: torch eager, torch CUDA
   graphs, ONNX Runtime CUDA (if onnxruntime-gpu is installed), TensorRT fp16 (if tensorrt imports);
4. the TensorRT/GPU tests of tests/test_exporters.py.

Every part runs in its own try/except and reports why it was skipped or failed; the rest still runs.
Prints a markdown table and, when $OUT is set, writes $OUT/gpu_check.md and $OUT/gpu_check.json.

    bash benchmarks/gpu_check.sh            # from the repository root
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

BUDGET_S = 450  # leave room under the 8-minute limit for start-up and writing
START = time.time()
ROWS: list[dict] = []


def record(part: str, result: str, detail: str = "") -> None:
    ROWS.append({"part": part, "result": result, "detail": detail, "at_s": round(time.time() - START, 1)})
    print(f"[{ROWS[-1]['at_s']:6.1f}s] {part}: {result} {detail}", flush=True)


def run_part(part: str, fn, min_left_s: float = 30):
    """Run one part; a failure or a short budget becomes a row, never an abort."""
    left = BUDGET_S - (time.time() - START)
    if left < min_left_s:
        record(part, "skipped", f"time budget: {left:.0f} s left, needs {min_left_s:.0f} s")
        return None
    try:
        return fn()
    except Exception as err:  # each part reports its own failure and the script goes on
        record(part, "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        traceback.print_exc()
        return None


def environment() -> bool:
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
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch: nothing else to check")
    return True


def training_throughput(with_catalyst: bool, batch: int = 128, warmup: int = 10, steps: int = 40) -> None:
    """Images/s of ResNet-50 SGD steps (bf16 autocast, channels_last) on random data."""
    import torch
    import torchvision

    model = torchvision.models.resnet50(num_classes=1000).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    method = catalyst_method(model, x[:1]) if with_catalyst else None
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if method:
            method.before_step()
        optimizer.step()
        if method:
            method.after_step(0.01)
    torch.cuda.synchronize()
    ips = steps * batch / (time.perf_counter() - start)
    record("train resnet50" + (" + catalyst" if with_catalyst else ""), f"{ips:.0f} images/s",
           f"batch {batch}, bf16 autocast, channels_last, {steps} steps")


def catalyst_method(model, example):
    """The lead's Catalyst regularizer on `model`; ImportError (row: skipped) when it is not there."""
    from catalyst_deploy.catalyst import make_method
    from catalyst_deploy.surgery import ChannelGraph

    method = make_method("catalyst")
    method.start(ChannelGraph(model, example))
    return method


def pruned_resnet50():
    """(dense, pruned) ResNet-50 on the CPU; pruned to <= 0.5 MACs by L2 surgery, round_to 8."""
    import copy

    import torch
    import torchvision

    from catalyst_deploy.surgery import prune_to_target

    torch.manual_seed(0)
    dense = torchvision.models.resnet50().eval()
    pruned = copy.deepcopy(dense)
    result = prune_to_target(pruned, torch.randn(1, 3, 224, 224), 0.5, round_to=8)
    record("prune resnet50", f"MACs ratio {result.macs_after / result.macs_before:.3f}",
           f"{result.macs_before / 1e9:.2f}G -> {result.macs_after / 1e9:.2f}G, L2, round_to 8")
    return dense, pruned


def gpu_latency(dense, pruned) -> None:
    """Dense vs pruned through the project's own benchmark harness, batch 1 and 64."""
    from catalyst_deploy.bench.harness import BenchOptions, run_benchmark
    from catalyst_deploy.bench.report import write_report

    options = BenchOptions(backends=("torch", "torch-cudagraph", "ort-cuda", "trt"), batches=(1, 64),
                           input_shape=(3, 224, 224), min_time_s=1.0, min_runs=50, precision="fp16")
    report = run_benchmark(pruned, dense, options, progress=lambda text: record("latency", "running", text))
    for row in report.rows:
        s = row.stats
        detail = (f"p50 {s.p50_ms:.3f} ms, p99 {s.p99_ms:.3f} ms, {s.throughput_ips:.0f} img/s" if s else row.error)
        ratio = report.latency_ratio(row.backend, row.batch) if row.model == "pruned" else None
        record(f"latency {row.backend} b{row.batch} {row.model}", "ok" if row.ok else "failed",
               detail + (f", pruned/dense {ratio:.3f}" if ratio else ""))
    if os.environ.get("OUT"):
        write_report(report, Path(os.environ["OUT"]) / "bench")


def gpu_tests() -> None:
    """The tensorrt/gpu-marked exporter tests, in a subprocess with its own timeout."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "tests/test_exporters.py"],
                          capture_output=True, text=True, timeout=max(30, BUDGET_S - (time.time() - START)))
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


def main() -> None:
    if not run_part("environment", environment, min_left_s=0):
        write_outputs()
        return
    run_part("train resnet50", lambda: training_throughput(False), min_left_s=60)
    run_part("train resnet50 + catalyst", lambda: training_throughput(True), min_left_s=60)
    models = run_part("prune resnet50", pruned_resnet50, min_left_s=60)
    if models:
        run_part("latency", lambda: gpu_latency(*models), min_left_s=90)
    run_part("gpu tests", gpu_tests, min_left_s=40)
    write_outputs()


if __name__ == "__main__":
    main()
