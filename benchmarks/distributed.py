"""One process against two under torchrun (gloo, CPU), same global batch, same seed: wall time, time in the
training phases, final accuracy, and whether the prune plans are identical (issue 11).

    python benchmarks/distributed.py            # the demo data, pretrained small ResNet, l1 to 0.7 MACs

Writes the `distributed` section of RESULTS.md. On a 2-core machine two processes compete for the cores the
one process had alone, so no speed-up is expected here; the GPU scaling needs a GPU machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_file import git_commit, machine_line, write_section  # noqa: E402

COMMON = ["zoo:fashion_small_resnet", "--data", "demo", "--method", "l1", "--target-flops", "0.7", "--reg-epochs", "1",
          "--recover-epochs", "2", "--lr", "0.005", "--threads", "1", "--device", "cpu", "--json"]
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, out: Path) -> dict:
    batch = str(64 // processes)  # the same global batch of 64
    prune = ["-m", "catalyst_deploy", "prune", *COMMON, "--batch-size", batch, "--out", str(out)]
    if processes == 1:
        cmd = [sys.executable, *prune]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
               str(free_port()), *prune]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    report = json.loads((out / "report.json").read_text())
    training = sum(v for k, v in report["seconds"].items() if k in ("regularize", "recover"))
    return {"processes": processes, "wall_s": round(wall, 1), "training_s": round(training, 1),
            "final": report["accuracy"]["final"], "plan": (out / "plan.json").read_text()}


def main() -> int:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        rows = [run(n, Path(work) / f"p{n}") for n in (1, 2)]
    same = rows[0]["plan"] == rows[1]["plan"]
    lines = ["## One process against two under torchrun (`benchmarks/distributed.py`)", "",
             f"- machine: {machine_line()}; load average at the start {load:.2f}; commit {git_commit()}",
             "- pretrained `zoo:fashion_small_resnet` on the demo data, l1 to 0.7 of the MACs, 1 + 2 epochs, global "
             "batch 64 (64 per process alone, 32 per rank with two), gloo, 1 thread per process", "",
             "| processes | wall time (s) | in the training phases (s) | final accuracy (%) |", "|---|---|---|---|",
             *[f"| {r['processes']} | {r['wall_s']} | {r['training_s']} | {r['final']:.2f} |" for r in rows], "",
             f"Prune plans identical: **{'yes' if same else 'no'}**. Two processes on 2 cores share the cores one process "
             "had; the start-up of the process group and the second process's imports add to the wall time."]
    print("\n".join(lines))
    write_section("distributed", "\n".join(lines), HERE / "RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
