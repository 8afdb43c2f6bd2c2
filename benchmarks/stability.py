"""Decision robustness: how much the kept channel sets of one dense model agree across data-order seeds, for
every method, and for one process against two under torchrun (issue 16, item 5).

    python benchmarks/stability.py --cache /work/cache      # from the cached runs; runs nothing
    python benchmarks/stability.py --cache benchmarks/compare_records benchmarks/study_records   # both dense models
    python benchmarks/stability.py --cache benchmarks/compare_records benchmarks/study_records \
        --variants plus-center-group-d0.5-no-cost-rewind-s0.4      # and the Catalyst default's paper_study runs

Sources (each made by its own script, which this one only reads):
- the long budget (8+4 epochs, compare.py's narrow model): the runs of `compare.py final --budgets 8+4
  --dense-seed 0 --seeds 1 2` next to seed 0's own runs: one dense model (seed 0), three data orders;
- the short demo budget (1+1 epochs of 30 steps from the shipped demo model, seeds 4, 5, 6):
  benchmarks/short_budget.json;
- torchrun: benchmarks/distributed.json (`distributed.py`: the same seed in one process and in two gloo ranks).

Writes benchmarks/stability.json (records with method, budget, target, mean_pairwise_jaccard) and the
`stability` section of RESULTS.md. The Jaccard overlap of two kept sets is |A & B| / |A | B|; two random
halves of a model's channels overlap about 1/3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import git_commit, publish  # noqa: E402

LONG_SEEDS = (0, 1, 2)


def jaccard(pruned_a, pruned_b, total: int) -> float:
    kept_a, kept_b = set(range(total)) - set(pruned_a), set(range(total)) - set(pruned_b)
    return len(kept_a & kept_b) / max(1, len(kept_a | kept_b))


def overlap(pruned_sets: list, total: int) -> tuple[float, float]:
    """(mean, min) pairwise Jaccard of the kept sets."""
    pairs = [jaccard(a, b, total) for a, b in itertools.combinations(pruned_sets, 2)]
    return sum(pairs) / len(pairs), min(pairs)


def long_budget_records(cache: Path, methods: list[str], targets: list[float], seeds=LONG_SEEDS) -> list[dict]:
    """One record per (method, target) whose data-order runs `seeds` from dense seed 0 are all cached."""
    from long_budget import narrow_channels, record

    total = narrow_channels()
    out = []
    for method, target in itertools.product(methods, targets):
        records = [r for seed in seeds if (r := record(cache, method, target, seed, dense_seed=0)) is not None]
        if len(records) < len(seeds):
            print(f"{method} 8+4 t{target:g}: {len(records)} of {len(seeds)} runs cached, left out", flush=True)
            continue
        mean, low = overlap([r["pruned"] for r in records], total)
        out.append({"method": method, "budget": "8+4", "target": target, "mean_pairwise_jaccard": round(mean, 4),
                    "min_pairwise_jaccard": round(low, 4), "seeds": list(seeds), "dense_seed": 0,
                    "final": [r["acc_final"] for r in records], "val": [r.get("val_final") for r in records],
                    "channels": total, "acc_dense": records[0]["acc_dense"],
                    "source": f"compare.py final --budgets 8+4 --dense-seed 0 (records: {cache})"})
    return out


def variant_records(cache: Path, variants: list[str], targets: list[float], seeds=LONG_SEEDS) -> list[dict]:
    """One record per (paper_study.py variant, target) whose three data-order runs are cached in `cache` (which
    must hold the narrow dense model's file: paper_study starts every run from it)."""
    from types import SimpleNamespace

    import paper_study
    from long_budget import narrow_channels

    total, out = narrow_channels(), []
    for name, target in itertools.product(variants, targets):
        try:
            records = [paper_study.run(SimpleNamespace(cache=cache, report=True), name, "8+4", target, seed)
                       for seed in seeds]
        except SystemExit as missing:
            print(f"{name} 8+4 t{target:g}: {missing}, left out", flush=True)
            continue
        mean, low = overlap([r["pruned"] for r in records], total)
        out.append({"method": f"catalyst: {name}", "budget": "8+4", "target": target,
                    "mean_pairwise_jaccard": round(mean, 4), "min_pairwise_jaccard": round(low, 4),
                    "seeds": list(seeds), "dense_seed": 0, "final": [r["acc_final"] for r in records],
                    "val": [r.get("val_final") for r in records], "channels": total, "acc_dense": records[0]["acc_dense"],
                    "source": f"paper_study.py --variants {name} (records: {cache})"})
    return out


def short_budget_records() -> list[dict]:
    path = HERE / "short_budget.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())["runs"]
    out = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        mean, low = overlap([r["pruned"] for r in rs], rs[0]["total"])
        out.append({"method": method, "budget": "demo 1+1 x 30 steps", "target": 0.5,
                    "mean_pairwise_jaccard": round(mean, 4), "min_pairwise_jaccard": round(low, 4),
                    "seeds": [r["seed"] for r in rs], "final": [r["accuracy"]["final"] for r in rs],
                    "channels": rs[0]["total"], "source": "short_budget.py"})
    return out


def torchrun_records() -> list[dict]:
    path = HERE / "distributed.json"
    if not path.is_file():
        return []
    return [{"method": r["method"], "budget": r["budget"], "target": r["target"], "comparison": "2 ranks vs 1 process",
             "mean_pairwise_jaccard": r["kept_jaccard"], "final": r["final"], "source": "distributed.py"}
            for r in json.loads(path.read_text())["rows"]]


def section(records: list[dict], seeds=LONG_SEEDS) -> str:
    lines = ["## Decision robustness: kept-set overlap (`benchmarks/stability.py`)", "",
             f"Commit {git_commit()}. From the cached runs of compare.py (long budget: one dense model, seed 0's, "
             f"data-order seeds {', '.join(map(str, seeds))}), short_budget.py (the shipped demo model, seeds 4, 5, 6) and "
             "distributed.py (the same seed, one process against two gloo ranks). Jaccard overlap of the kept "
             "channel sets; two random halves overlap about 0.33. Goal (issue 16): at least 0.9 for Catalyst. Rows "
             "`catalyst: NAME` are paper_study.py's runs of that setting from the same dense model (the default "
             "is window-1-epoch); rows `catalyst` run the setting selection.json "
             "names, chosen before the rewind setting existed.", "",
             "| budget | target | method | seeds or processes | mean pairwise Jaccard | min | final accuracy (%) | "
             "mean test / validation | dense |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        who = r.get("comparison") or ", ".join(map(str, r["seeds"]))
        finals = " / ".join(f"{a:.2f}" for a in r["final"])
        low = r.get("min_pairwise_jaccard")
        val = [v for v in r.get("val") or [] if v is not None]
        means = f"{sum(r['final']) / len(r['final']):.2f}" + (f" / {sum(val) / len(val):.2f}" if val else "")
        lines.append(f"| {r['budget']} | {r['target']:g} | {r['method']} | {who} | {r['mean_pairwise_jaccard']:.3f} | "
                     f"{'-' if low is None else f'{low:.3f}'} | {finals} | {means} | {r.get('acc_dense', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, nargs="+", default=[HERE / "cache"],
                   help="compare.py's caches (records and dense models); a dense model retrained on another machine "
                        "has a cache of its own, and each record names its dense model's accuracy")
    p.add_argument("--methods", nargs="+", default=["catalyst", "catalyst-gated", "l1", "taylor", "depgraph", "random"])
    p.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.15])
    p.add_argument("--variants", nargs="*", default=[],
                   help="paper_study.py variants (the Catalyst default's among them) as rows of their own, from "
                        "--variant-cache")
    p.add_argument("--variant-cache", type=Path, default=HERE / "study_records",
                   help="the cache paper_study.py ran in (it holds the narrow dense model's file)")
    p.add_argument("--long-seeds", type=int, nargs="+", default=list(LONG_SEEDS),
                   help="the long budget's data-order seeds (every one cached, or the row is left out)")
    p.add_argument("--section", default="stability",
                   help="the RESULTS.md section; another than stability writes no stability.json (a study)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    seeds = tuple(args.long_seeds)
    records = [r for cache in args.cache for r in long_budget_records(cache, args.methods, args.targets, seeds)]
    records += variant_records(args.variant_cache, args.variants, args.targets, seeds) if args.variants else []
    records += short_budget_records() + torchrun_records() if args.section == "stability" else []
    if not args.no_write and args.section == "stability":
        (HERE / "stability.json").write_text(json.dumps({"commit": git_commit(), "records": records}, indent=1))
    publish(args.section, section(records, seeds), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
