"""The long budget of compare.py (8 regularization + 4 recovery epochs; the one-shot methods cut at once and
recover for all 12), at 0.3 and 0.15 of the MACs, on the narrow small ResNet 16-32-64: the table over seeds
(each seed its own dense model), the damage while deciding, and the plots (issue 16, items 4, 6 and 8).

    python benchmarks/long_budget.py --cache /work/cache                  # a lane's live cache
    python benchmarks/long_budget.py --cache benchmarks/compare_records   # the committed records

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


def table(cache: Path) -> tuple[list[str], dict]:
    lines, means = [], {}
    for target in TARGETS:
        lines += ["", f"### {BUDGET} epochs, target {target:g} of the MACs (test accuracy %, each seed its own dense model)",
                  "", "| method | seeds | after its phase (damage) | forced set zeroed | final per seed | final mean ± std | "
                  "MACs | rank corr. with ablation | Catalyst: forced to zero / margin log10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            recs = [r for s in SEEDS if (r := record(cache, method, target, s)) is not None]
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


def log_c_at_decision(cache: Path) -> list[float]:
    """log10 c of every channel at the decision, over Catalyst's long-budget runs whose folders are cached."""
    values = []
    for path in sorted((cache / "runs").glob(f"catalyst_{BUDGET}_*/report.json")):
        report = json.loads(path.read_text())
        values += [x / math.log(10) for x in (report.get("method") or {}).get("log_c_at_freeze") or []]
    return values


def plot(cache: Path, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    ax_acc, ax_hist, ax_overlap = fig.subplots(1, 3)
    for method in METHODS:
        points = []
        for target in TARGETS:
            recs = [r for s in SEEDS if (r := record(cache, method, target, s)) is not None]
            if recs:
                points.append((statistics.mean(r["macs_ratio"] for r in recs), statistics.mean(r["acc_final"] for r in recs)))
        if points:
            ax_acc.plot(*zip(*sorted(points)), marker="o", lw=1.8 if method == "catalyst" else 1.0, label=method)
    ax_acc.set(title=f"{BUDGET} epochs: final test accuracy (mean over seeds)", xlabel="MACs ratio", ylabel="top-1 %")
    ax_acc.legend(fontsize=7)
    values = log_c_at_decision(cache)
    if values:
        ax_hist.hist([max(-12.0, min(12.0, v)) for v in values], bins=48, color="tab:purple")
        ax_hist.axvline(0.0, color="k", lw=0.8)
    ax_hist.set(title="paper form: log10 c at the decision (every 8+4 run)", xlabel="log10 c, clipped to ±12 (> 0: prune side)",
                ylabel="channels")
    stability = HERE / "stability.json"
    rows = json.loads(stability.read_text())["records"] if stability.is_file() else []
    rows = [r for r in rows if r["source"].startswith("compare.py")]
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
    args = p.parse_args(argv)
    rows, means = table(args.cache)
    body = "\n".join([f"## The long budget ({BUDGET} epochs, `benchmarks/long_budget.py`)", "",
                      f"Machine: {machine_line()} (runs in single-thread lanes beside other work). Narrow small ResNet "
                      "16-32-64 on full Fashion-MNIST (5,000 training images held out for validation), settings "
                      "chosen on the validation split at 1+1 (compare.py's selection); every method the same "
                      "optimizer steps. 'After its phase' is the accuracy at the end of the regularized phase (a "
                      "one-shot method's fine-tuning before its cut): the damage while deciding. 'Rank corr. with ablation': "
                      "Spearman correlation of the method's prune priority with each channel's single-channel "
                      "ablation loss on the dense model (negative: it prunes first the channels whose removal "
                      "costs least).", *rows, *goals(means),
                      "", "Plots: `benchmarks/long_budget.png` (accuracy against MACs, Catalyst's log10 c at the "
                      "decision, kept-set overlap)."])
    publish("long-budget", body, write=not args.no_write)
    if not args.no_write:
        plot(args.cache, HERE / "long_budget.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
