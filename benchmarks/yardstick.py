"""Can the long budget tell prune sets apart? A harder cut of the same narrow model, where random channels
should trail a good set by at least a point.

    python benchmarks/yardstick.py --cache benchmarks/study_records --targets 0.08 --seeds 0 1 2   # a lane's runs
    python benchmarks/yardstick.py --cache benchmarks/study_records --targets 0.08 0.06 --seeds 0 1 2 3 4 5 \
        --variants window-1-epoch window-1-epoch-no-rewind plus-center-group-d0.5-no-cost-rewind-s0.4 \
        --transplant --standardised --report      # RESULTS.md's section from the cache (what is missing is said)

At 8+4 epochs on the narrow model (16-32-64) random channels, cut at once and recovered for 12 epochs, end
within 0.43 points of the best method at 0.3 and 0.15 of the MACs (six data orders, `long-budget-six-orders`):
differences between good sets smaller than that measure recovery, not the set. With `--round-to 8` and
`--max-layer-ratio 0.9` the model cannot go much below 0.13 of its MACs, so this study makes the cut harder with
finer blocks (`--round-to`) and lower targets. Every method runs as at the long budget (L1 and random cut at
once, Taylor after its short scoring window, Catalyst as it ships, DepGraph at its chosen strength), from seed
0's narrow dense model, one data order per seed, through compare.py's run machinery (records cached and keyed by
every setting). Writes the `yardstick` section of RESULTS.md with --report (or `--section NAME`).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine_line, publish  # noqa: E402

METHODS = ("l1", "random", "taylor", "catalyst", "depgraph")
STANDARDISED = "catalyst's log c over its group's spread, cut at once"  # --standardised
# paper_study.py's descriptions, where they speak of an earlier default
ABOUT = {"plus-center-group-d0.5-no-cost-rewind-s0.4": "the default without its one-epoch window: the freeze at half "
                                                      "the phase (four epochs)"}
SHIPPED = "window-1-epoch"  # paper_study.py's name of the settings Catalyst ships with
TRANSPLANT = "catalyst's set, cut at once"  # its prune set with L1's schedule (--transplant)
# DepGraph's strength: compare.py's choice at 1+1, which held at the long budget (paper_study.py's depgraph rows)
DEPGRAPH = {"reg_strength": 5e-4}


def setting(method: str, round_to: int, variant: str = SHIPPED) -> dict:
    """The long budget's setting of `method` (compare.py's choice at 1+1, the long budget's cut), finer blocks;
    Catalyst's as paper_study.py's `variant` names it."""
    from compare import setting_for
    from paper_study import BASE, VARIANTS

    if method == "catalyst":
        chosen = {"catalyst": {"catalyst": {**BASE, **VARIANTS[variant][0]}}}
    else:
        chosen = {method: DEPGRAPH if method == "depgraph" else {}}
    return {**setting_for(method, chosen, "8+4"), "round_to": round_to}


def run(args, method: str, target: float, seed: int, variant: str = SHIPPED) -> dict:
    from compare_runs import run_cached
    from paper_study import context

    cfg, dense = context(args)
    return run_cached(cfg, method, setting(method, args.round_to, variant), "8+4", target, seed, dense,
                      cached_only=args.report)


def transplant_of(args, record: dict) -> dict:
    from paper_study import transplant

    return transplant(args, record, {"round_to": args.round_to})


def narrow_graph():
    """The narrow model's channel graph: channel indices, as every record's `pruned` holds them, to groups."""
    import torch

    from catalyst_deploy.inputs.zoo import small_resnet
    from catalyst_deploy.surgery.graph import ChannelGraph
    from long_budget import NARROW

    return ChannelGraph(small_resnet(in_channels=1, num_classes=10, widths=NARROW), torch.zeros(1, 1, 28, 28))


@functools.lru_cache(maxsize=None)
def group_columns():
    """(each channel's group, the groups in order, their column names: first producer and size); built once per
    process (every table and every standardised run asks)."""
    import collections

    graph = narrow_graph()
    group = graph.group_of_channel()
    sizes = collections.Counter(group.tolist())
    order = sorted(sizes)
    return group, order, [f"{graph.root_name(g)} ({sizes[g]})" for g in order]


def group_standardised(report_path: Path) -> list[float]:
    """A Catalyst run's log c at its freeze (report.json), each group's live channels divided by their spread."""
    import json

    import torch

    report = json.loads(report_path.read_text())
    log_c = torch.tensor([float(v) for v in report["method"]["log_c_at_freeze"]])  # clamped to +-50: finite
    group = group_columns()[0]
    score = log_c.clone()
    for g in group.unique():
        live = (group == g) & (log_c.abs() < 50)  # a channel already at F = 0 or delta = 0 keeps its side
        if live.sum() > 1:
            score[live] = (log_c[live] - log_c[live].mean()) / log_c[live].std().clamp_min(1e-12)
    return score.clamp(-1e3, 1e3).tolist()


def standardised(args, record: dict) -> dict:
    """A diagnostic: Catalyst's log c at its freeze (each group already centred to mean 0 by `center_groups`)
    divided by each group's spread, ranked across groups by the budget as any score is, the set cut at once and
    trained with L1's schedule. Against the transplant of the set Catalyst took, it says whether the order across
    groups (the groups' log c spreads differ up to twentyfold) is what its set loses."""
    import method_study

    from catalyst_deploy.method_table import METHODS, MethodSpec
    from compare_runs import run_cached
    from paper_study import context

    cfg, dense = context(args)
    if not args.report:  # the record's key names the run it ranks, not the scores: --report reads the cache alone
        method_study.Ranked.scores = group_standardised(args.cache / "runs" / record["key"] / "report.json")
    METHODS["ranked"] = MethodSpec("ranked", "a given score per channel", "method_study:Ranked", False)
    return run_cached(cfg, "ranked", {"cut": "start", "_log_c_of": record["key"], "_rule": "group-standardised",
                                      "round_to": args.round_to}, record["budget"], record["target"], record["seed"],
                      dense, cached_only=args.report)


def section(args, found: dict) -> str:
    from long_budget import mean_std, narrow_channels
    from paper_study import VARIANTS
    from stability import overlap

    lines = ["## The long budget at a harder cut (`benchmarks/yardstick.py`)", "",
             f"Machine: {machine_line()} (single-thread lanes beside other work). 8+4 epochs, seed 0's narrow dense "
             f"model (16-32-64; records in `{args.cache}`), data orders {', '.join(map(str, args.seeds))}, "
             f"`--round-to {args.round_to}` for every method (the long budget's runs use 8). Mean ± std over the "
             "data orders; the gap is each method's mean test accuracy below the best method's.", "",
             *[f"- catalyst ({v}): {ABOUT.get(v, VARIANTS[v][1])}" for v in args.variants if v != SHIPPED], "",
             "| target | method | data orders | final val | final test | gap (test) | MACs | after the phase (test) "
             "| kept-set overlap |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in args.targets:
        rows = {m: rs for (m, t), rs in found.items() if t == target}
        if not rows:
            continue
        best = max(statistics.mean(r["acc_final"] for r in rs) for rs in rows.values())
        for method, rs in sorted(rows.items(), key=lambda kv: -statistics.mean(r["acc_final"] for r in kv[1])):
            lap = overlap([r["pruned"] for r in rs], narrow_channels())[0] if len(rs) > 1 else None
            lines.append(f"| {target:g} | {method} | {len(rs)} | {mean_std([r['val_final'] for r in rs])} | "
                         f"{mean_std([r['acc_final'] for r in rs])} | "
                         f"{best - statistics.mean(r['acc_final'] for r in rs):.2f} | "
                         f"{statistics.mean(r['macs_ratio'] for r in rs):.3f} | "
                         f"{mean_std([r['acc_after_reg'] for r in rs])} | {'-' if lap is None else f'{lap:.2f}'} |")
    return "\n".join(lines + allocation(found) + group_correlations(args, found))


def allocation(found: dict) -> list[str]:
    """Channels each method keeps per coupled group (one entry per data order): where the sets differ most."""
    import collections

    group, order, names = group_columns()
    sizes = collections.Counter(group.tolist())
    lines = ["", "Channels kept per coupled group (the group named by its first producer, its size), one entry per "
             "data order:", "", "| target | method | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(order)]
    for (method, target), rs in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        counts = [collections.Counter(group[r["pruned"]].tolist()) for r in rs]
        lines.append(f"| {target:g} | {method} | " + " | ".join(
            " / ".join(str(sizes[g] - c.get(g, 0)) for c in counts) for g in order) + " |")
    return lines


def group_correlations(args, found: dict) -> list[str]:
    """Within each coupled group, the Spearman correlation of a method's prune priority (report.json's
    `channels.priority`, highest pruned first) with the dense model's single-channel ablation loss (negative:
    the channels whose removal costs least go first); mean over the data orders whose run folders are kept."""
    import json

    import torch

    from paper_study import context

    cfg, dense = context(args)
    ablation = torch.tensor(dense.ablation(cfg))
    group, groups, names = group_columns()

    def spearman(a, b):
        ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).float()
        return float(torch.corrcoef(ranks)[0, 1])

    lines = ["", "Rank correlation (Spearman) of each method's prune priority with the single-channel ablation loss, "
             "within each coupled group (mean over the data orders; the transplant has no "
             "order of its own):", "", "| target | method | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(groups)]
    for (method, target), rs in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        paths = [args.cache / "runs" / r["key"] / "report.json" for r in rs]
        if method == TRANSPLANT or not all(p.is_file() for p in paths):
            continue
        per_run = []
        for path in paths:
            priority = torch.tensor(json.loads(path.read_text())["channels"]["priority"], dtype=torch.float)
            per_run.append([spearman(priority[group == g], ablation[group == g]) for g in groups])
        lines.append(f"| {target:g} | {method} | " + " | ".join(
            f"{statistics.mean(col):+.2f}" for col in zip(*per_run)) + " |")
    if len(lines) == 5:  # run folders (report.json: the priorities) are kept only where the runs were made
        return ["", "(The within-group rank correlations need the runs' folders, which the cache does not keep.)"]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--targets", type=float, nargs="+", default=[0.08])
    p.add_argument("--round-to", type=int, default=4, help="channel counts in multiples of this (every method)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="data-order seeds, every one from seed 0's dense model")
    p.add_argument("--variants", nargs="+", default=[SHIPPED], metavar="VARIANT",
                   help="Catalyst's settings, by paper_study.py's names (default: as it ships)")
    p.add_argument("--transplant", action="store_true",
                   help="also Catalyst's prune sets trained with L1's schedule (cut at once): the set apart from "
                        "the steps its deciding window takes from recovery")
    p.add_argument("--standardised", action="store_true",
                   help="a diagnostic: Catalyst's log c at its freeze over each group's spread, cut at once "
                        "with L1's schedule")
    p.add_argument("--report", action="store_true", help="the table from cached runs only; writes RESULTS.md")
    p.add_argument("--section", default="yardstick", help="the RESULTS.md section to write")
    p.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md as it is")
    args = p.parse_args(argv)
    from paper_study import VARIANTS

    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant {', '.join(unknown)}: paper_study.py's VARIANTS names them")

    import torch

    torch.set_num_threads(1)
    found: dict = {}
    runs = [(m, v) for m in args.methods for v in (args.variants if m == "catalyst" else [SHIPPED])]
    for target in args.targets:
        for seed in args.seeds:
            for method, variant in runs:
                try:
                    record = run(args, method, target, seed, variant)
                except SystemExit as missing:  # --report: what has not run yet is left out, and said
                    print(missing, flush=True)
                    continue
                if record.get("error"):  # a failed run is said where it ran, and not cached
                    continue
                name = method if variant == SHIPPED else f"catalyst ({variant})"
                found.setdefault((name, target), []).append(record)
                if method != "catalyst" or variant != SHIPPED:
                    continue
                for wanted, label, make in ((args.transplant, TRANSPLANT, transplant_of),
                                            (args.standardised, STANDARDISED, standardised)):
                    if not wanted:
                        continue
                    try:
                        found.setdefault((label, target), []).append(make(args, record))
                    except SystemExit as missing:
                        print(missing, flush=True)
    if args.report:
        publish(args.section, section(args, found), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
