"""The long budget of compare.py (8 regularization + 4 recovery epochs; the one-shot methods cut at once and
recover for all 12), at 0.3 and 0.15 of the MACs, on the narrow small ResNet 16-32-64: the table over seeds
(each seed its own dense model), the damage while deciding, and the plots (issue 16, items 4, 6 and 8).

    python benchmarks/long_budget.py --cache /work/cache                  # a lane's live cache
    python benchmarks/long_budget.py --cache benchmarks/compare_records   # the committed records
    python benchmarks/long_budget.py --cache benchmarks/study_records --dense-seed 0 --catalyst window-1-epoch \
        --section long-budget-default --plot benchmarks/long_budget_default.png
        # three data orders from one dense model; the Catalyst row is a paper_study.py variant's runs (the default)

Runs nothing: the runs are `compare.py final --budgets 8+4` (cached per key). Writes the `long-budget`
section of RESULTS.md and benchmarks/long_budget.png: final accuracy against MACs (mean over seeds), the
histogram of log10 c at Catalyst's decision (from the run folders' report.json, where the cache has them), and
the kept-set overlap across data-order seeds (benchmarks/stability.json).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine_line, publish  # noqa: E402

BUDGET, TARGETS, SEEDS = "8+4", (0.3, 0.15), (0, 1, 2)
METHODS = ("catalyst", "catalyst-gated", "depgraph", "l1", "taylor", "random")
NARROW = (16, 32, 64)


def dense_name(cache: Path, seed: int) -> str:
    """The file name of the narrow dense model of `seed` (the .pt, or its record in a cache of records only)."""
    pattern = f"dense_fashion-mnist_w{'-'.join(map(str, NARROW))}_*_s{seed}"
    found = sorted(p for p in cache.glob(pattern + ".*") if p.suffix in (".pt", ".json") and ".ablation" not in p.name)
    if not found:
        raise SystemExit(f"no dense model of seed {seed} in {cache}: run `compare.py dense --models narrow` first")
    return found[0].with_suffix(".pt").name


def record(cache: Path, method: str, target: float, seed: int, dense_seed: int | None = None) -> dict | None:
    """The cached run of `method` at `target` and `seed` from the dense model of `dense_seed` (default: its own
    seed), or None when it has not run."""
    from compare import BUDGET_MODEL, DATA, setting_for
    from compare_runs import run_key

    chosen = _chosen(BUDGET_MODEL[BUDGET])
    args = SimpleNamespace(latency_aware=False, quick=False, data=DATA)
    dense = SimpleNamespace(path=dense_name(cache, seed if dense_seed is None else dense_seed))
    path = cache / "records" / f"{run_key(args, method, setting_for(method, chosen, BUDGET), BUDGET, target, seed, dense)}.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return None if rec.get("error") else rec


def runs(cache: Path, method: str, target: float, dense_seed: int | None = None,
         variant: str | None = None) -> list[dict]:
    """The cached runs of `method` at `target` over SEEDS; with `variant`, Catalyst's are that paper_study.py
    variant's (a setting other than the selection's, such as the default)."""
    if method == "catalyst" and variant is not None:
        import paper_study

        found = []
        for seed in SEEDS:
            try:
                found.append(paper_study.run(SimpleNamespace(cache=cache, report=True), variant, BUDGET, target, seed))
            except SystemExit:
                pass
        return found
    return [r for s in SEEDS if (r := record(cache, method, target, s, dense_seed)) is not None]


@functools.lru_cache(maxsize=None)
def _chosen(model: str) -> dict:
    """selection.json's settings for `model` (the wide model's where it has none), read once."""
    chosen = json.loads((HERE / "selection.json").read_text())["chosen"]
    return chosen.get(model, chosen["wide"])


def narrow_channels() -> int:
    """Prunable channels of the narrow model (the index space of every record's `pruned`)."""
    import torch

    from catalyst_deploy.inputs.zoo import small_resnet
    from catalyst_deploy.surgery.graph import ChannelGraph

    return ChannelGraph(small_resnet(in_channels=1, num_classes=10, widths=NARROW), torch.zeros(1, 1, 28, 28)).num_channels


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(cache: Path, dense_seed: int | None = None, variant: str | None = None) -> tuple[list[str], dict]:
    lines, means = [], {}
    models = "each seed its own dense model" if dense_seed is None else f"data orders from seed {dense_seed}'s dense model"
    for target in TARGETS:
        lines += ["", f"### {BUDGET} epochs, target {target:g} of the MACs (test accuracy %, {models})",
                  "", "| method | seeds | after its phase (damage) | forced set zeroed | final per seed | final mean ± std | "
                  "MACs | rank corr. with ablation | Catalyst: forced to zero / margin log10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            recs = runs(cache, method, target, dense_seed, variant)
            if not recs:
                continue
            finals = [r["acc_final"] for r in recs]
            means[method, target] = (statistics.mean(finals), len(recs))
            phase = mean_std([r["acc_after_reg"] for r in recs])
            decided = [r["acc_after_decision"] for r in recs if r.get("acc_after_decision") is not None]
            cat = [r["catalyst"] for r in recs if r.get("catalyst")]
            extra = ", ".join(f"{c['forced_to_zero']} / {c['margin_log10']:.1f}" if c.get("margin_log10") is not None
                              else f"{c['forced_to_zero']} / -" for c in cat) or "-"
            lines.append(f"| {method} | {', '.join(str(r['seed']) for r in recs)} | {phase} | {mean_std(decided)} | "
                         f"{' / '.join(f'{a:.2f}' for a in finals)} | {mean_std(finals)} | "
                         f"{statistics.mean(r['macs_ratio'] for r in recs):.3f} | "
                         f"{mean_std([r['rank_corr'] for r in recs if r.get('rank_corr') is not None])} | {extra} |")
    return lines, means


def goals(means: dict) -> list[str]:
    lines = ["", "### Against the issue's goals"]
    for target in TARGETS:
        base = {m: v for (m, t), v in means.items() if t == target and m not in ("catalyst", "catalyst-gated", "random")}
        if ("catalyst", target) not in means or not base:
            continue
        best = max(base, key=lambda m: base[m][0])
        cat, rnd = means["catalyst", target], means.get(("random", target))
        lines.append(f"- target {target:g}: Catalyst (paper form) {cat[0]:.2f} ({cat[1]} seeds) against the best baseline, "
                     f"{best} {base[best][0]:.2f} ({base[best][1]} seeds): {cat[0] - base[best][0]:+.2f} pt"
                     + (f"; random trails the best method by {max(v[0] for (m, t), v in means.items() if t == target) - rnd[0]:.2f} "
                        "pt (the yardstick needs at least 1)" if rnd else ""))
    return lines


def log_c_at_decision(cache: Path, keys: list[str]) -> list[float]:
    """log10 c of every channel at the decision, over the Catalyst runs `keys` whose folders are cached."""
    values = []
    for key in keys:
        path = cache / "runs" / key / "report.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        values += [x / math.log(10) for x in (report.get("method") or {}).get("log_c_at_freeze") or []]
    return values


def records_of(source: str) -> Path | None:
    """The cache a stability.json row was computed from (its source ends in "(records: PATH)")."""
    found = re.search(r"\(records: (.+)\)$", source)
    return Path(found.group(1)).resolve() if found else None


def plot(cache: Path, path: Path, dense_seed: int | None = None, variant: str | None = None) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    ax_acc, ax_hist, ax_overlap = fig.subplots(1, 3)
    for method in METHODS:
        points = []
        for target in TARGETS:
            recs = runs(cache, method, target, dense_seed, variant)
            if recs:
                points.append((statistics.mean(r["macs_ratio"] for r in recs), statistics.mean(r["acc_final"] for r in recs)))
        if points:
            ax_acc.plot(*zip(*sorted(points)), marker="o", lw=1.8 if method == "catalyst" else 1.0, label=method)
    ax_acc.set(title=f"{BUDGET} epochs: final test accuracy (mean over seeds)", xlabel="MACs ratio", ylabel="top-1 %")
    ax_acc.legend(fontsize=7)
    values = log_c_at_decision(cache, [r["key"] for t in TARGETS for r in runs(cache, "catalyst", t, dense_seed, variant)])
    if values:
        ax_hist.hist([max(-12.0, min(12.0, v)) for v in values], bins=48, color="tab:purple")
        ax_hist.axvline(0.0, color="k", lw=0.8)
    ax_hist.set(title=f"paper form{f' ({variant})' if variant else ''}: log10 c at the decision (8+4)", xlabel="log10 c, clipped to ±12 (> 0: prune side)",
                ylabel="channels")
    stability = HERE / "stability.json"
    rows = json.loads(stability.read_text())["records"] if stability.is_file() else []
    # this cache's rows (stability.py reads several), Catalyst's from `variant` when given
    rows = [r for r in rows if records_of(r["source"]) == cache.resolve() and (
        r["method"] == f"catalyst: {variant}" or (r["source"].startswith("compare.py") and not (variant and r["method"] == "catalyst")))]
    labels = [f"{r['method']} {r['target']:g}" for r in rows]
    ax_overlap.barh(labels, [r["mean_pairwise_jaccard"] for r in rows], color="tab:green")
    ax_overlap.axvline(0.9, color="k", lw=0.8, ls="--")
    ax_overlap.set(title="kept-set Jaccard across data-order seeds", xlim=(0, 1))
    ax_overlap.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--no-write", action="store_true", help="print the section; write neither RESULTS.md nor the plot")
    p.add_argument("--dense-seed", type=int, default=None,
                   help="the runs of data-order seeds from this seed's dense model (compare.py final --dense-seed)")
    p.add_argument("--catalyst", default=None, metavar="VARIANT",
                   help="Catalyst's row from this paper_study.py variant's runs (default: the selection's setting)")
    p.add_argument("--section", default="long-budget", help="the RESULTS.md section to write")
    p.add_argument("--plot", type=Path, default=HERE / "long_budget.png", help="the figure to write")
    args = p.parse_args(argv)
    rows, means = table(args.cache, args.dense_seed, args.catalyst)
    title = "" if args.catalyst is None else f": the default Catalyst ({args.catalyst})"
    body = "\n".join([f"## The long budget ({BUDGET} epochs, `benchmarks/long_budget.py`){title}", "",
                      f"Machine: {machine_line()} (runs in single-thread lanes beside other work). Narrow small ResNet "
                      "16-32-64 on full Fashion-MNIST (5,000 training images held out for validation), settings "
                      "chosen on the validation split at 1+1 (compare.py's selection); every method the same "
                      "optimizer steps. 'After its phase' is the accuracy at the end of the regularized phase (a "
                      "one-shot method's fine-tuning before its cut): the damage while deciding. 'Rank corr. with ablation': "
                      "Spearman correlation of the method's prune priority with each channel's single-channel "
                      "ablation loss on the dense model (negative: it prunes first the channels whose removal "
                      "costs least)." + (f" Catalyst's row: the runs of `paper_study.py --variants {args.catalyst}` (docs/method.md says how "
                                         "its setting was chosen)."
                                         if args.catalyst else ""), *rows, *goals(means),
                      "", f"Plots: `benchmarks/{args.plot.name}` (accuracy against MACs, Catalyst's log10 c at the "
                      "decision, kept-set overlap)."])
    publish(args.section, body, write=not args.no_write)
    if not args.no_write:
        plot(args.cache, args.plot, args.dense_seed, args.catalyst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
