"""The short budget of issue 16: does a method decide the same channels from seed to seed, and how far does
it fall, when it gets one epoch of 30 steps to decide and one to recover?

    python benchmarks/short_budget.py                       # every row of RUNS; seeds 4, 5, 6
    python benchmarks/short_budget.py --methods catalyst --seeds 4 5 --no-write

Every run is the user's command of the issue, through `catalyst_deploy.api.prune`:
`zoo:fashion_small_resnet --data demo --reg-epochs 1 --recover-epochs 1 --steps-per-epoch 30 --batch-size 64
--threads 1 --target-flops 0.5 --seed S`. For each method: the accuracy after its phase, right after the cut
and after recovery, how much of a regularizing method's prune set was forced, and the overlap (Jaccard) of
the kept channel sets between every two seeds (a random choice of half the channels overlaps about 0.33).
A second Catalyst row runs without its cost weights (every channel's penalty equal), which separates what the
MACs weighting costs here from what the phase's length does. The goal the issue sets Catalyst: final accuracy at least L1's on the same seeds, kept sets overlapping at
least 0.9. Writes short_budget.json and the `short-budget` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import git_commit, machine_line, publish  # noqa: E402 (benchmarks/results_file.py)
from catalyst_deploy.methods.catalyst import LITERAL  # noqa: E402

SECTION = "short-budget"
RUNS = {  # a row of the table: the method and its settings ("catalyst": the paper form read literally, LITERAL)
    "catalyst": ("catalyst", {"catalyst": LITERAL}),
    "catalyst, cost_aware off": ("catalyst", {"catalyst": {**LITERAL, "cost_aware": False}}),
    # does the task's gradient reach the catalyst here, and does an earlier freeze (more recovery) help?
    "catalyst, bypass minus": ("catalyst", {"catalyst": {**LITERAL, "bypass": "minus"}}),
    "catalyst, cost_aware off, deadline 0.3": ("catalyst", {"catalyst": {**LITERAL, "cost_aware": False,
                                                                         "deadline": 0.3}}),
    # the long budget's best paper-form setting (paper_study.py): does it hold at 24 steps?
    "catalyst, plus, center groups, no cost, deadline 0.25, rewind": ("catalyst", {"catalyst": {
        "bypass": "plus", "center": True, "center_groups": True, "pressure": 0.0, "deadline": 0.25,
        "cost_aware": False, "rewind": True}}),
    "catalyst (default: the rewind setting, deadline 0.5)": ("catalyst", {}),
    # BatchNorm on its running statistics while deciding: a sample's gradient no longer hangs on its batch-mates
    "catalyst, running_bn": ("catalyst", {"catalyst": {"running_bn": True}}),
    "catalyst-gated": ("catalyst-gated", {}),
    "l1": ("l1", {}),
    # data-driven baselines: how much do their sets agree across data orders at this budget?
    "taylor": ("taylor", {}),
    "depgraph": ("depgraph", {}),
}
SETTINGS = dict(model="zoo:fashion_small_resnet", data="demo", reg_epochs=1, recover_epochs=1, steps_per_epoch=30,
                batch_size=64, threads=1, target_flops="0.5", device="cpu", checkpoint_every=0)


def one_run(row: str, seed: int) -> dict:
    from catalyst_deploy import api

    method, extra = RUNS[row]
    with tempfile.TemporaryDirectory(prefix="short-budget-") as tmp:
        cfg = api.load_config(**SETTINGS, **extra, method=method, seed=seed, out=str(Path(tmp) / "run"))
        start = time.time()
        report = api.prune(cfg, log=lambda _m: None)
    split = (report.method or {}).get("split") or {}
    return {"method": row, "seed": seed, "accuracy": report.accuracy, "macs_ratio": round(report.macs.ratio, 4),
            "pruned": sorted(report.channels["pruned"]), "total": report.channels["total"],
            "forced_to_zero": (report.method or {}).get("forced_to_zero"), "forced_freeze": split.get("forced"),
            "margin": split.get("margin"), "seconds": round(time.time() - start, 1), "commit": git_commit(),
            "machine": machine_line().split(", load")[0]}


def jaccard_of_kept(a: dict, b: dict) -> float:
    kept_a = set(range(a["total"])) - set(a["pruned"])
    kept_b = set(range(b["total"])) - set(b["pruned"])
    return len(kept_a & kept_b) / max(1, len(kept_a | kept_b))


def section(runs: list[dict], methods: list[str], seeds: list[int]) -> str:
    made = sorted({f"commit {r.get('commit', '?')} on {r.get('machine', '?')}" for r in runs})
    lines = [f"Runs made at {'; '.join(made)} (the last column says which). Every run: `catalyst-deploy prune "
             "zoo:fashion_small_resnet --data demo --reg-epochs 1 --recover-epochs 1 --steps-per-epoch 30 "
             f"--batch-size 64 --threads 1 --target-flops 0.5 --method M --seed S`, seeds {seeds}; test split of "
             "the demo data. Command: `python benchmarks/short_budget.py`.", "",
             "| method | after its phase | forced set zeroed | right after the cut | final (per seed) | final mean | "
             "kept-set Jaccard (min / mean) | forced freezes | commit |", "|---|---|---|---|---|---|---|---|---|"]
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        acc = lambda key: " / ".join(f"{r['accuracy'][key]:.1f}" if key in r["accuracy"] else "-" for r in rs)  # noqa: E731
        pairs = [jaccard_of_kept(a, b) for a, b in itertools.combinations(rs, 2)]
        overlap = f"{min(pairs):.2f} / {sum(pairs) / len(pairs):.2f}" if pairs else "-"
        forced = "-" if rs[0]["forced_freeze"] is None else f"{sum(bool(r['forced_freeze']) for r in rs)} of {len(rs)}"
        mean = sum(r["accuracy"]["final"] for r in rs) / len(rs)
        lines.append(f"| {method} | {acc('after_regularization')} | {acc('after_decision')} | "
                     f"{acc('after_surgery')} | {acc('final')} | {mean:.2f} | {overlap} | {forced} | "
                     f"{', '.join(sorted({r.get('commit', '?') for r in rs}))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(RUNS), choices=list(RUNS), help="rows of the table")
    p.add_argument("--seeds", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--no-write", action="store_true", help="print, do not write short_budget.json or RESULTS.md")
    args = p.parse_args(argv)
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            runs.append(one_run(method, seed))
            r = runs[-1]
            print(f"{method} seed {seed}: final {r['accuracy']['final']:.2f}% ({r['seconds']:.0f} s)", flush=True)
    path = HERE / "short_budget.json"
    if not args.no_write:  # rows and seeds not run this time keep their earlier runs
        done = {(r["method"], r["seed"]) for r in runs}
        earlier = json.loads(path.read_text())["runs"] if path.is_file() else []
        runs = sorted([r for r in earlier if (r["method"], r["seed"]) not in done and r["method"] in RUNS] + runs,
                      key=lambda r: (list(RUNS).index(r["method"]), r["seed"]))
        path.write_text(json.dumps({"settings": SETTINGS, "runs": runs}, indent=1))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    publish(SECTION, f"## Short budget: decisions across seeds (`benchmarks/short_budget.py`)\n\n"
            + section(runs, methods, seeds), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
