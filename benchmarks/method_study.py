"""What decides Catalyst's result (docs/method.md): its shipped setting against variants, 3 seeds, both
targets, the 1+1 budget, test split, through compare.py's run machinery (records cached and shared).

    python benchmarks/method_study.py                 # after `compare.py select` and `compare.py final`
    python benchmarks/method_study.py --seeds 0       # one lane's share

Variants: the setting chosen on the validation split ("shipped"); without cost weights (every channel's
penalty equal); holding lambda until the channels have split (settle 0.02) instead of freezing when the
collapsed set covers the target; c0 = 1.5; restoring survivors' gates to 1 at the freeze; gates at 20x the
learning rate, with the other weights under plain SGD or under the invariant update; and a transplant: the
prune set the shipped setting decided, trained with L1's schedule (cut at once, every step recovers), which
separates the quality of the set from the cost of the phase. The shipped setting and the fast gates also go
through compare.py's fair-chance experiment (seed 0), and the table shows how much of each prune set the
dynamics zeroed before the freeze: a setting can win on accuracy by giving up a property the method is
defined by.

Writes method_study.json and the `catalyst-variants` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from catalyst_deploy.methods.base import PruningMethod  # noqa: E402

# name: (change, what), each on top of compare.py's selection ("shipped": gates at the base learning rate, plain
# SGD, step_max 0.05, deadline 0.6).
VARIANTS = {
    "shipped": ({}, "the setting chosen on the validation split"),
    "no-cost": ({"cost_aware": False}, "every channel's penalty weighted equally (no MACs weights)"),
    "hold": ({"settle": 0.02}, "lambda held until at most 2% of channels are undecided (the split by the dynamics)"),
    "c0-1.5": ({"c0": 1.5}, "every channel starts at c = 1.5"),
    "restore": ({"restore": True}, "kept channels' gates set back to 1 at the freeze"),
    "fast-gates": ({"gate_lr": 20.0}, "gates at 20x the learning rate (the best of 3-100 on validation, seed 0): the "
                                      "task loss louder against the penalty's clock"),
    "fast-invariant": ({"gate_lr": 20.0, "invariant": True}, "the same fast gates with the invariant update of the "
                                                             "other weights (the best of 20 and 30 on validation)"),
}
FAIRNESS = ("shipped", "fast-gates", "fast-invariant")  # their fair-chance gap (compare_fairness, seed 0) too


def variant_setting(name: str, shipped: dict) -> dict:
    return {"catalyst": {**shipped.get("catalyst", {}), **VARIANTS[name][0]}}


class FixedSet(PruningMethod):
    """The transplant: prune exactly `chosen` (another run's set), with a one-shot method's schedule."""

    chosen: list[int] = []

    def priority(self):
        import torch

        p = torch.zeros(self.graph.num_channels)
        p[FixedSet.chosen] = 1.0
        return p


class Ranked(PruningMethod):
    """Prune by a given score per channel (`scores`, highest first), with a one-shot method's schedule
    (yardstick.py's --standardised)."""

    scores: list[float] = []

    def priority(self):
        import torch

        return torch.tensor(Ranked.scores)


def main(argv=None) -> int:
    import torch

    from catalyst_deploy.method_table import METHODS, MethodSpec
    from compare import BUDGETS, parse
    from compare_dense import dense_models
    from compare_runs import run_cached

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    extra = p.parse_args(argv)
    args = parse(["final", "--seeds", *map(str, extra.seeds)])
    torch.set_num_threads(args.threads)
    METHODS["transplant"] = MethodSpec("transplant", "another run's prune set (method_study.py)", "method_study:FixedSet",
                                       False)
    shipped = json.loads((HERE / "selection.json").read_text())["chosen"]["catalyst"]
    dense = dense_models(args)
    rows = []
    for seed in args.seeds:
        for target in args.targets:
            for name in VARIANTS:
                record = run_cached(args, "catalyst", variant_setting(name, shipped), "1+1", target, seed, dense[seed])
                rows.append({**{k: v for k, v in record.items() if k != "pruned"}, "variant": name})
                if name == "shipped":
                    import method_study  # the module the method table imports (this file runs as __main__)

                    method_study.FixedSet.chosen = record["pruned"]
                    moved = run_cached(args, "transplant", {"cut": "start", "_set_of": record["key"]}, "1+1", target,
                                       seed, dense[seed])
                    rows.append({**{k: v for k, v in moved.items() if k != "pruned"}, "variant": "transplant"})
    fairness = {}
    if 0 in extra.seeds:  # the fair-chance experiment runs on seed 0's dense model (one lane's share)
        from compare_fairness import run_fairness

        for name in FAIRNESS:
            found = run_fairness(args, dense[0], methods=("catalyst",), settings={"catalyst": variant_setting(name, shipped)})
            fairness[name] = {str(r["factor"]): r["gap_points"] for r in found["rows"]}
    (HERE / "method_study.json").write_text(json.dumps({"rows": rows, "fairness": fairness}, indent=1))
    write_section(rows, args, fairness)
    del BUDGETS
    return 0


def forced(splits: list[dict]) -> str:
    """'N of M': runs whose freeze was forced at the deadline (the collapsed set never covered the target)."""
    return f"{sum(bool(c.get('forced')) for c in splits)} of {len(splits)}" if splits else "-"


def write_section(rows: list[dict], args, fairness: dict) -> None:
    from compare_report import mean_std
    from results_file import machine_line, write_section as write

    described = {**{k: v[1] for k, v in VARIANTS.items()},
                 "transplant": "the shipped setting's prune set, trained with L1's schedule (cut at once)"}
    lines = ["## What decides Catalyst's result (`benchmarks/method_study.py`)", "",
             f"- machine: {machine_line()}; 1 thread; commit(s) {', '.join(sorted({r['commit'] for r in rows}))}",
             "- compare.py's dense models and protocol, 1+1 epochs, seeds " + ", ".join(map(str, args.seeds))
             + "; test accuracy %, mean ± std over seeds", "",
             "- fair chance: the gap (points) between the shares pruned among rescaled and untouched channels after "
             "compare.py's fair-chance experiment (seed 0, 300 steps, every weight trainable), k = 0.1 / 10; "
             "L1 and group lasso are in the `compare` section", "",
             "| variant | what | target | right after the cut | final | final (val) | MACs | ORT CPU latency b1 "
             "| rank corr. with ablation | margin at freeze (log10) | decided at freeze | prune set zeroed by the dynamics "
             "| freeze forced at the deadline | fair chance gap k = 0.1 / 10 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in [*VARIANTS, "transplant"]:
        for target in args.targets:
            mine = [r for r in rows if r["variant"] == name and r["target"] == target and not r.get("error")]
            cat = [r["catalyst"] for r in mine if r.get("catalyst")]
            gaps = fairness.get(name)
            fair = f"{gaps['0.1']:+.1f} / {gaps['10.0']:+.1f}" if gaps else "-"
            latency = [r["latency"]["1"] for r in mine if r.get("latency")]
            lines.append(f"| {name} | {described[name]} | {target:g} | {mean_std([r['acc_after_cut'] for r in mine])} | "
                         f"**{mean_std([r['acc_final'] for r in mine])}** | {mean_std([r['val_final'] for r in mine])} | "
                         f"{mean_std([r['macs_ratio'] for r in mine], 3)} | {mean_std(latency, 3)} | "
                         f"{mean_std([r['rank_corr'] for r in mine if r.get('rank_corr') is not None], 3)} | "
                         f"{mean_std([c['margin_log10'] for c in cat])} | {mean_std([c['decided_share'] for c in cat])} | "
                         f"{mean_std([c['collapsed_share_of_prune_set'] for c in cat])} | "
                         f"{forced(cat)} | "
                         f"{fair if target == args.targets[0] else ''} |")
    write("catalyst-variants", "\n".join(lines), HERE / "RESULTS.md")


if __name__ == "__main__":
    raise SystemExit(main())
