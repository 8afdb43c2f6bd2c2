"""Coverage of the torchvision and timm zoos: every model `catalyst-deploy check` would see, at random
initialisation, cut to half its MACs, exported to ONNX (parity at batch 1 and 3) and timed against the
dense export on ONNX Runtime CPU at batch 1.

    nice -n 10 python benchmarks/zoo.py                 # torchvision's classification models + TIMM_MODELS
    python benchmarks/zoo.py --models torchvision:resnet18,timm:deit_tiny_patch16_224 --no-write
    python benchmarks/zoo.py --redo-failed              # after a fix: run the failed records again

Each model runs `catalyst_deploy.api.check` (target 0.5, --bench) in its own process on one thread, so a
crash, the CPU-time limit (CPU_LIMIT_S) or the kernel's OOM killer costs that model only and becomes its
record's `reason`. Every
record is written to benchmarks/zoo.json as soon as it exists, and models that already have one are
skipped: an interrupted run resumes where it stopped. Writes the `zoo` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from results_file import git_commit, machine_line, publish  # benchmarks/results_file.py

SECTION = "zoo"
ZOO_JSON = Path(__file__).resolve().parent / "zoo.json"
TARGET = "0.5"
MIN_TIME_S = 0.5  # per model and batch: the table has ~100 models on a shared 2-core machine
NICE = 10  # the machine is shared: the zoo yields to everyone else
CPU_LIMIT_S = 1800  # CPU seconds per model: wall time on a shared machine says more about the load
WALL_LIMIT_S = 4 * 3600
TIMM_MODELS = (  # >= 20 across families: ViT, DeiT, Swin, ConvNeXt, EfficientNet, RegNet, MobileNetV3, ResNets
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224",
    "deit_small_patch16_224", "deit_base_distilled_patch16_224", "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224", "convnext_nano", "convnext_tiny", "convnext_small", "efficientnet_b0",
    "efficientnet_b2", "efficientnetv2_rw_s", "regnetx_016", "regnety_016", "regnety_032", "mobilenetv3_small_100",
    "mobilenetv3_large_100", "resnet18", "resnet50", "resnet50d", "resnext50_32x4d", "seresnet50",
)


def all_specs() -> list[str]:
    import torchvision

    return ([f"torchvision:{name}" for name in torchvision.models.list_models(module=torchvision.models)]
            + [f"timm:{name}" for name in TIMM_MODELS])


def first_the_five(specs: list[str]) -> list[str]:
    """The issue's five transformers first (their records are wanted soonest), then the rest in order."""
    from zoo_report import FIVE  # benchmarks/zoo_report.py

    return [s for s in FIVE if s in specs] + [s for s in specs if s not in FIVE]


def input_shape(spec: str) -> tuple[int, ...]:
    """torchvision's classification models take 224x224; a timm model its own default input size."""
    if spec.startswith("timm:"):
        import timm

        return (1, *timm.create_model(spec[5:], pretrained=False).pretrained_cfg["input_size"])
    return (1, 3, 224, 224)


def check_one(spec: str) -> dict:
    """One model's record (in this process)."""
    import torch

    from catalyst_deploy import api

    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = api.load_check_config(model=spec, input_shape=input_shape(spec), target_flops=TARGET, bench=True,
                                threads=1, bench_min_time_s=MIN_TIME_S)
    try:
        report = api.check(cfg, log=lambda _m: None).to_dict()
    except Exception as err:  # noqa: BLE001 - a usage error of check (the model does not run on the shape...)
        report = {"status": "failed", "reason": f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"}
    return record_of(spec, report, time.perf_counter() - start)


def record_of(spec: str, report: dict, seconds: float) -> dict:
    cut, latency = report.get("cut") or {}, report.get("latency") or {}
    kinds = [row["kind"] for row in report.get("groups", [])]
    return {"model": spec, "status": report["status"], "reason": report.get("reason"),
            "input_shape": report.get("input_shape"), "macs_dense": report.get("macs_dense"),
            "params_dense": report.get("params_dense"), "macs_ratio": cut.get("macs_ratio"),
            "params_ratio": cut.get("params_ratio"), "groups": {k: kinds.count(k) for k in sorted(set(kinds))},
            "heads_removed": cut.get("heads_removed"), "left_alone": len(report.get("left_alone", {})),
            "attention_converted": len(report.get("converted", {})), "parity": cut.get("parity"),
            "latency_dense_ms": latency.get("dense_ms"), "latency_pruned_ms": latency.get("pruned_ms"),
            "latency_ratio": latency.get("ratio"), "seconds": round(seconds, 1), "steps": report.get("seconds")}


def run_isolated(spec: str) -> dict:
    """`check_one(spec)` in a child process at nice NICE on one thread; its death is the record's reason."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        nice = ["nice", "-n", str(max(0, NICE - os.nice(0)))]  # nice 10 in all, however this process was started
        done = subprocess.run([*nice, sys.executable, __file__, "--one", spec], capture_output=True,
                              text=True, timeout=WALL_LIMIT_S, env=env, preexec_fn=_limit_cpu)
    except subprocess.TimeoutExpired:
        return failed(spec, f"still running after {WALL_LIMIT_S} s of wall time on this machine", start)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    why = {-9: "killed (out of memory?)", -24: f"more than {CPU_LIMIT_S} s of CPU time (SIGXCPU)"}.get(
        done.returncode, (done.stderr.strip().splitlines() or ["?"])[-1])
    return failed(spec, f"the check process ended with code {done.returncode}: {why[:300]}", start)


def _limit_cpu() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S + 60))


def failed(spec: str, reason: str, start: float) -> dict:
    return {"model": spec, "status": "failed", "reason": reason, "seconds": round(time.perf_counter() - start, 1)}


def load_records() -> dict[str, dict]:
    if not ZOO_JSON.is_file():
        return {}
    return {record["model"]: record for record in json.loads(ZOO_JSON.read_text())["records"]}


def save_record(record: dict, meta: dict) -> dict[str, dict]:
    """Add one record to zoo.json and return every record now in it. The file is read again under a lock, so
    two lanes (`--models` lists that do not overlap) can fill one table without losing each other's records."""
    import fcntl

    with open(ZOO_JSON.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = {**load_records(), record["model"]: record}
        ordered = sorted(records.values(), key=lambda r: r["model"])
        tmp = ZOO_JSON.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**meta, "records": ordered}, indent=1))
        tmp.replace(ZOO_JSON)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated specs (default: the whole zoo)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one record as JSON on stdout
    parser.add_argument("--redo-failed", action="store_true", help="run the models whose record failed again")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="write the section from zoo.json, run nothing")
    args = parser.parse_args()
    if args.one:
        print(json.dumps({**check_one(args.one), "commit": git_commit()}))
        return
    records = load_records()
    specs = args.models.split(",") if args.models else first_the_five(all_specs())
    meta = {"settings": {"target_flops": TARGET, "bench": "ort-cpu batch 1, one thread", "min_time_s": MIN_TIME_S,
                         "cpu_limit_s": CPU_LIMIT_S}, "machine": machine_line(), "commit": git_commit()}
    if ZOO_JSON.is_file():  # the machine and load seen when the table was started
        meta["machine"] = json.loads(ZOO_JSON.read_text()).get("machine", meta["machine"])
    for spec in [] if args.report_only else specs:
        old = records.get(spec)
        if old and (old["status"] == "ok" or not args.redo_failed):
            continue
        r = run_isolated(spec)
        print(f"{spec}: {r['status']} {r.get('macs_ratio')} {r.get('latency_ratio')} {r['seconds']} s "
              f"{r.get('reason') or ''}", flush=True)
        records = save_record(r, meta)
    from zoo_report import zoo_section  # benchmarks/zoo_report.py

    publish(SECTION, zoo_section(records, meta, specs), write=not args.no_write)


if __name__ == "__main__":
    main()
