"""One process against two under torchrun (gloo, CPU), same global batch, same seed: wall time, time in the
training phases, final accuracy, whether the prune plans are identical (issue 11), and how much the kept
channel sets overlap (Jaccard; issue 16's robustness goal for Catalyst is at least 0.9).

    python benchmarks/distributed.py                         # l1, catalyst, catalyst-gated
    python benchmarks/distributed.py --methods catalyst
    python benchmarks/distributed.py --methods catalyst --recipe running_bn.yaml   # a setting, printed only

The demo data and the pretrained small ResNet, target 0.5, 1 + 2 epochs. Writes benchmarks/distributed.json
(read by stability.py) and the `distributed` section of RESULTS.md. On a 2-core machine two processes compete for the cores the
one process had alone, so no speed-up is expected here; the GPU scaling needs a GPU machine.
"""

from __future__ import annotations

import argparse
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

TARGET, REG, RECOVER = "0.5", "1", "2"
COMMON = ["zoo:fashion_small_resnet", "--data", "demo", "--target-flops", TARGET, "--reg-epochs", REG,
          "--recover-epochs", RECOVER, "--lr", "0.005", "--threads", "1", "--device", "cpu", "--json"]
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(method: str, processes: int, out: Path, recipe: str | None = None, seed: int = 0) -> dict:
    batch = str(64 // processes)  # the same global batch of 64
    prune = ["-m", "catalyst_deploy", "prune", *COMMON, "--method", method, "--batch-size", batch, "--out", str(out),
             "--seed", str(seed), *(["--recipe", recipe] if recipe else [])]
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
    return {"method": method, "processes": processes, "wall_s": round(wall, 1), "training_s": round(training, 1),
            "final": report["accuracy"]["final"], "plan": (out / "plan.json").read_text(),
            "pruned": report["channels"]["pruned"], "total": report["channels"]["total"]}


def kept_jaccard(a: dict, b: dict) -> float:
    kept_a, kept_b = set(range(a["total"])) - set(a["pruned"]), set(range(b["total"])) - set(b["pruned"])
    return round(len(kept_a & kept_b) / max(1, len(kept_a | kept_b)), 4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["l1", "catalyst", "catalyst-gated"])
    p.add_argument("--recipe", help="a recipe for every run (a method's settings); the results go to stdout only")
    p.add_argument("--seed", type=int, default=0, help="another seed than 0; the results go to stdout only")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    rows, pairs = [], []
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            one, two = (run(method, n, Path(work) / f"{method}-p{n}", args.recipe, args.seed) for n in (1, 2))
            rows += [one, two]
            pairs.append({"method": method, "budget": f"demo {REG}+{RECOVER}", "target": float(TARGET),
                          "identical_plans": one["plan"] == two["plan"], "kept_jaccard": kept_jaccard(one, two),
                          "final": [one["final"], two["final"]]})
            print(f"{method}: Jaccard {pairs[-1]['kept_jaccard']}, final {one['final']} / {two['final']}", flush=True)
    if args.recipe or args.seed:  # a study: distributed.json and RESULTS.md hold the shipped settings' seed 0
        return 0
    (HERE / "distributed.json").write_text(json.dumps({"commit": git_commit(), "rows": pairs}, indent=1))
    lines = ["## One process against two under torchrun (`benchmarks/distributed.py`)", "",
             f"- machine: {machine_line().split(', load')[0]}; load average at the start {load:.2f}; commit {git_commit()}",
             f"- pretrained `zoo:fashion_small_resnet` on the demo data, target {TARGET} of the MACs, {REG} + {RECOVER} "
             "epochs, global batch 64 (64 per process alone, 32 per rank with two), gloo, 1 thread per process, seed 0",
             "", "| method | processes | wall time (s) | in the training phases (s) | final accuracy (%) |",
             "|---|---|---|---|---|",
             *[f"| {r['method']} | {r['processes']} | {r['wall_s']} | {r['training_s']} | {r['final']:.2f} |" for r in rows],
             "", "| method | prune plans identical | kept-set Jaccard, 2 ranks vs 1 process |", "|---|---|---|",
             *[f"| {q['method']} | {'yes' if q['identical_plans'] else 'no'} | {q['kept_jaccard']:.3f} |" for q in pairs],
             "", "Two processes on 2 cores share the cores one process had; the start-up of the process group and the "
             "second process's imports add to the wall time. Two ranks see the same global batches and the same "
             "augmented images as one process (each item's draws are a function of the seed, the epoch and the "
             "item); what separates the runs is each rank's BatchNorm normalising its half of the batch with that "
             "half's statistics (SyncBatchNorm is GPU-only), and float round-off. Catalyst's setting `running_bn` "
             "removes the first while it decides (`--recipe`, docs/method.md): 0.95 / 0.97 / 0.93 at seeds 0, 1, 2."]
    print("\n".join(lines))
    write_section("distributed", "\n".join(lines), HERE / "RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
