"""Wall time of `catalyst-deploy check` as a user runs it (a fresh process, the console script's module), the
issue 17 goal being under 60 s for torchvision:resnet50 at 224x224 on 2 cores.

    python benchmarks/check_time.py                     # resnet50, 3 runs
    python benchmarks/check_time.py --model torchvision:vit_b_16 --runs 1 --no-write

Writes the `check_time` section of benchmarks/RESULTS.md (results_file.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from results_file import git_commit, machine_line, publish  # benchmarks/results_file.py

SECTION = "check_time"


def time_check(model: str, shape: str) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "catalyst_deploy.cli", "check", model, "--input-shape", shape,
                           "--json"], capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"check failed: {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:resnet50")
    parser.add_argument("--input-shape", default="1,3,224,224")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    machine = machine_line()
    rows = []
    for _ in range(args.runs):
        load = os.getloadavg()[0]
        seconds, report = time_check(args.model, args.input_shape)
        steps = ", ".join(f"{step} {value:g}" for step, value in report["seconds"].items())
        rows.append(f"| {seconds:.1f} | {load:.1f} | {steps} | {report['cut']['macs_ratio']} |")
    body = "\n".join([
        f"## `catalyst-deploy check` wall time (`benchmarks/check_time.py`)", "",
        f"`catalyst-deploy check {args.model} --input-shape {args.input_shape}` in a fresh process (default "
        f"settings: torch on one thread, target 0.5, no --bench). Machine: {machine}; commit {git_commit()}.", "",
        "| wall s | load (1 min) before | steps (s, as the report gives them) | trial cut MACs ratio |",
        "|---|---|---|---|", *rows])
    publish(SECTION, body, write=not args.no_write)


if __name__ == "__main__":
    main()
