"""Does the paper's Catalyst lose the long budget to its setting? Variants of its schedule at the long budget
(8+4 epochs, seed 0's narrow dense model), on the validation split, through compare.py's run machinery (records
cached and shared with compare.py, keyed by the setting).

    python benchmarks/paper_study.py --cache /work/cache                        # every variant, target 0.3
    python benchmarks/paper_study.py --cache /work/cache --variants p0.5 --targets 0.3 0.15
    python benchmarks/paper_study.py --cache /work/cache --report               # the table from the cache only
    python benchmarks/paper_study.py --cache benchmarks/study_records --report --section paper-study-groups \
        --variants plus-center-d0.25 plus-center-group-d0.25 --transplant --targets 0.3 0.15   # skips what is missing

The shipped setting (compare.py's selection at 1+1: bypass minus, pressure 0.02, strength 4) freezes at its
deadline at the long budget with most of the prune set filled from the c <= 1 side (RESULTS.md,
`long-budget`). The variants ask whether more prune pressure (the relative decay of F that tips channels
with little task defence to c > 1) or less strength (the proximal steps that shrink every undecided channel)
lets the dynamics make the set. Writes the `paper-study` section of RESULTS.md with --report.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine_line, publish  # noqa: E402

BASE = {"bypass": "minus", "pressure": 0.02, "strength": 4.0}
# the rewind setting (docs/method.md, "The set or the phase?"); its variants differ in deadline, strength, window
REWIND = {"bypass": "plus", "center": True, "center_groups": True, "pressure": 0.0, "cost_aware": False, "rewind": True}
VARIANTS = {
    "shipped": ({}, "compare.py's selection at 1+1"),
    "p0.1": ({"pressure": 0.1}, "5x the prune pressure"),
    "p0.5": ({"pressure": 0.5}, "25x the prune pressure"),
    "p0.5-s1": ({"pressure": 0.5, "strength": 1.0}, "25x the pressure, a quarter of the strength"),
    "no-cost": ({"cost_aware": False}, "every channel's penalty weighed equally (no MACs weights)"),
    "no-cost-p0.5": ({"cost_aware": False, "pressure": 0.5}, "no MACs weights, 25x the pressure"),
    "plus": ({"bypass": "plus"}, "the forward-pass term with the other sign"),
    "plus-center": ({"bypass": "plus", "center": True, "pressure": 0.0},
                    "plus; log c re-centred on the target at every check, no pressure"),
    "plus-center-s8": ({"bypass": "plus", "center": True, "pressure": 0.0, "strength": 8.0},
                       "plus-center with twice the strength"),
    "plus-center-d0.25": ({"bypass": "plus", "center": True, "pressure": 0.0, "deadline": 0.25},
                          "plus-center, the freeze at a quarter of the phase (more steps to recovery)"),
    "plus-center-d0.25-no-cost": ({"bypass": "plus", "center": True, "pressure": 0.0, "deadline": 0.25,
                                   "cost_aware": False}, "plus-center-d0.25 without the MACs weights"),
    "plus-center-group-d0.25": ({"bypass": "plus", "center": True, "center_groups": True, "pressure": 0.0,
                                 "deadline": 0.25}, "plus-center-d0.25, each group's log c centred first"),
    "plus-center-group-d0.25-no-cost": ({"bypass": "plus", "center": True, "center_groups": True, "pressure": 0.0,
                                         "deadline": 0.25, "cost_aware": False},
                                        "plus-center-group-d0.25 without the MACs weights"),
    "plus-center-group-d0.25-no-cost-rewind": ({**REWIND, "deadline": 0.25},
                                               "plus-center-group-d0.25-no-cost, the set cut from the weights the "
                                               "phase started with"),
    "plus-center-group-d0.5-no-cost-rewind": ({**REWIND, "deadline": 0.5},
                                              "the same with the deadline compare.py select chose (the default)"),
    "plus-center-group-d0.1-no-cost-rewind": ({**REWIND, "deadline": 0.1},
                                              "the default with the freeze at a tenth of the phase (a tenth of the "
                                              "steps lost to recovery)"),
    # with rewind the freeze is forced and the set is cut from the phase's starting weights: the proximal steps
    # only shape the order of log c, and their bifurcation amplifies whatever order the first checks had
    "plus-center-group-d0.5-no-cost-rewind-s0.4": ({**REWIND, "deadline": 0.5, "strength": 0.4},
                                                  "the default with a tenth of the strength"),
    "plus-center-group-d0.5-no-cost-rewind-s0.04": ({**REWIND, "deadline": 0.5, "strength": 0.04},
                                                   "the default with a hundredth of the strength"),
    # the deciding window is recovery lost under rewind: shorter windows at the default's strength
    "plus-center-group-d0.25-no-cost-rewind-s0.4": ({**REWIND, "deadline": 0.25, "strength": 0.4},
                                                   "the default with the freeze at a quarter of the phase"),
    "plus-center-group-d0.125-no-cost-rewind-s0.4": ({**REWIND, "deadline": 0.125, "strength": 0.4},
                                                    "the default with the freeze after one epoch (an eighth)"),
    "window-1-epoch": ({**REWIND, "deadline": 0.5, "strength": 0.4, "window_epochs": 1.0},
                       "the default: the freeze at half the phase, and after one epoch at the latest"),
    # less strength leaves the order to the window's whole task signal (the proximal steps amplify the first
    # checks' order most): does that buy the overlap back at the window's accuracy?
    "window-1-epoch-s0.04": ({**REWIND, "deadline": 0.5, "strength": 0.04, "window_epochs": 1.0},
                             "the default with a tenth of the strength"),
    "window-2-epochs-s0.04": ({**REWIND, "deadline": 0.5, "strength": 0.04, "window_epochs": 2.0},
                              "the default with a two-epoch window and a tenth of the strength"),
    # under rewind the window's steps are recovery lost (the transplant at 0.08: 0.46 points): keep its weights
    "window-1-epoch-no-rewind": ({**REWIND, "deadline": 0.5, "strength": 0.4, "window_epochs": 1.0, "rewind": False},
                                 "the default, recovery from the weights the window trained (no rewind)"),
    "window-1-epoch-running-bn": ({**REWIND, "deadline": 0.5, "strength": 0.4, "window_epochs": 1.0, "running_bn": True},
                                  "the default with BatchNorm on its running statistics while deciding"),
}
# Baselines with a knob at the long budget, given the same chance Catalyst's window got there (name: method,
# setting, what); the setting compare.py's selection chose at 1+1 is the row `depgraph` in the comparisons.
BASELINES = {f"depgraph-{r:g}": ("depgraph", {"reg_strength": r}, f"DepGraph (GroupNormPruner), strength {r:g}")
             for r in (1e-4, 2e-3)}


TRANSPLANT = " -> transplant"

# study-only budgets (regularized + recovery epochs), registered in this process only: is the split a matter of
# the schedule's length? (the paper's CIFAR schedule runs about 170 epochs)
STUDY_BUDGETS = {"24+4": (24.0, 4.0)}


def context(args):
    return _context(Path(args.cache))


@functools.lru_cache(maxsize=None)
def _context(cache: Path):
    """(run settings, seed 0's narrow dense model): every run of the study starts from that one file (loaded
    once per process: dense_models reads the whole dataset)."""
    from compare import BUDGETS, DATA, MODELS
    from compare_dense import dense_models

    cfg = SimpleNamespace(latency_aware=False, quick=False, data=DATA, cache=cache, threads=1, seeds=[0])
    BUDGETS.update(STUDY_BUDGETS)
    return cfg, dense_models(cfg, MODELS["narrow"])[0]  # cached: the file compare.py's long budget starts from


def run(args, name: str, budget: str, target: float, seed: int) -> dict:
    """One variant's run; `seed` > 0: another data order from the same dense model (compare.py --dense-seed 0)."""
    from compare_runs import run_cached

    method, setting = (BASELINES[name][:2] if name in BASELINES else
                       ("catalyst", {"catalyst": {**BASE, **VARIANTS[name][0]}}))
    cfg, dense = context(args)
    return run_cached(cfg, method, setting, budget, target, seed, dense, cached_only=args.report)


def transplant(args, record: dict, extra: dict | None = None) -> dict:
    """`record`'s prune set trained with L1's schedule at its budget (cut at once, every epoch recovers); `extra`:
    settings the record was made with beyond the method's own (yardstick.py's --round-to)."""
    import method_study  # its FixedSet: prune exactly another run's set
    from catalyst_deploy.method_table import METHODS, MethodSpec
    from compare_runs import run_cached

    cfg, dense = context(args)
    METHODS["transplant"] = MethodSpec("transplant", "another run's prune set", "method_study:FixedSet", False)
    method_study.FixedSet.chosen = record["pruned"]
    return run_cached(cfg, "transplant", {"cut": "start", "_set_of": record["key"], **(extra or {})}, record["budget"],
                      record["target"], record["seed"], dense, cached_only=args.report)


def section(rows: list[tuple[str, str, float, dict]], cache: Path) -> str:
    dense = ", ".join(sorted({f"{r['acc_dense']:.2f}%" for *_, r in rows}))
    lines = [f"## The paper's Catalyst at the long budget: its setting (`benchmarks/paper_study.py`, dense model {dense})",
             "",
             f"Machine: {machine_line()} (single-thread lane beside other work). 8+4 epochs (24+4: a study-only longer "
             "phase, same recovery), seed 0's narrow dense "
             f"model ({dense}; records in `{cache}`), validation split (the selection criterion) and test split. Forced: the freeze came at "
             "the deadline, the prune set filled from the c <= 1 side.", "",
             "| variant | what | budget | target | seed | after phase (test) | forced set zeroed | final val | final test | MACs | "
             "frozen at step | forced | forced to zero | margin log10 | rank corr. with ablation |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, budget, target, r in rows:
        c = r.get("catalyst") or {}
        margin = "-" if c.get("margin_log10") is None else f"{c['margin_log10']:.1f}"
        what = (f"{name[:-len(TRANSPLANT)]}'s prune set, cut at once, every epoch recovers (L1's schedule)"
                if name.endswith(TRANSPLANT) else BASELINES[name][2] if name in BASELINES else VARIANTS[name][1])
        lines.append(f"| {name} | {what} | {budget} | {target:g} | {r['seed']} | {r['acc_after_reg']:.2f} | "
                     f"{r.get('acc_after_decision') or '-'} | {r['val_final']:.2f} | {r['acc_final']:.2f} | "
                     f"{r['macs_ratio']:.3f} | {c.get('frozen_at')} | {c.get('forced')} | {c.get('forced_to_zero')} | "
                     f"{margin} | {r.get('rank_corr')} |")
    return "\n".join(lines + overlaps(rows) + against_baselines(rows, cache))


def against_baselines(rows: list[tuple[str, str, float, dict]], cache: Path) -> list[str]:
    """Each variant run with several seeds against compare.py's methods on the same dense model and data-order
    seeds (`compare.py final --budgets 8+4 --dense-seed 0`): mean final accuracy, validation and test."""
    from long_budget import METHODS, mean_std, record

    runs = {}
    for name, budget, target, r in rows:
        if budget == "8+4" and not name.endswith(TRANSPLANT):
            runs.setdefault((name, target), {})[r["seed"]] = r
    lines = []
    for (name, target), by_seed in runs.items():
        seeds = sorted(by_seed)
        if len(seeds) < 2:
            continue
        table = {name: list(by_seed.values())}
        for method in METHODS:
            found = [record(cache, method, target, seed, dense_seed=0) for seed in seeds]
            if all(found):
                table[method] = found
        lines += ["", f"{name} against compare.py's methods at {target:g}, seeds {', '.join(map(str, seeds))} from "
                  "seed 0's dense model (compare.py final --dense-seed 0); mean ± std:", "",
                  "| method | final val | final test | after the phase (test) |", "|---|---|---|---|"]
        for method, rs in sorted(table.items(), key=lambda kv: -sum(r["val_final"] for r in kv[1])):
            lines.append(f"| {method} | {mean_std([r['val_final'] for r in rs])} | "
                         f"{mean_std([r['acc_final'] for r in rs])} | {mean_std([r['acc_after_reg'] for r in rs])} |")
    return lines


def overlaps(rows: list[tuple[str, str, float, dict]]) -> list[str]:
    """Kept-set overlap (mean pairwise Jaccard) of each variant run with several data-order seeds."""
    from long_budget import narrow_channels
    from stability import overlap

    found = {}
    for name, budget, target, r in rows:
        found.setdefault((name, budget, target), []).append(r)
    lines = [f"- {name}, {budget}, target {target:g}: kept sets of seeds {', '.join(str(r['seed']) for r in rs)} overlap "
             f"{overlap([r['pruned'] for r in rs], narrow_channels())[0]:.3f} (mean pairwise Jaccard)"
             for (name, budget, target), rs in found.items() if len(rs) > 1 and not name.endswith(TRANSPLANT)]
    return ["", *lines] if lines else []


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *BASELINES],
                   help="Catalyst settings, or a baseline's (depgraph-STRENGTH)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.3])
    p.add_argument("--budgets", nargs="+", default=["8+4"], choices=["8+4", *STUDY_BUDGETS],
                   help="8+4 (compare.py's long budget) and/or a longer study-only phase")
    p.add_argument("--transplant", action="store_true",
                   help="also each variant's prune set trained with L1's schedule (cut at once): the set's quality "
                        "apart from the cost of the phase that made it")
    p.add_argument("--report", action="store_true", help="the table from cached runs only; writes RESULTS.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="data-order seeds, every one from seed 0's dense model (as compare.py final --dense-seed 0)")
    p.add_argument("--section", default="paper-study",
                   help="the RESULTS.md section to write (one per cache: a dense model retrained elsewhere differs)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for budget in args.budgets:
        for target in args.targets:
            for name, seed in itertools.product(args.variants, args.seeds):
                try:
                    record = run(args, name, budget, target, seed)
                    rows.append((name, budget, target, record))
                    if args.transplant:
                        rows.append((name + TRANSPLANT, budget, target, transplant(args, record)))
                except SystemExit as missing:
                    print(missing, flush=True)
    publish(args.section, section(rows, args.cache), write=args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
