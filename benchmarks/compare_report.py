"""compare.py's outputs from the cached records: compare.json, the plot, and the `compare` section of
RESULTS.md (selection table, results per budget and target, the issue's goals, fair chance)."""

from __future__ import annotations

import json
import statistics

SECTION = "compare"


def mean_std(values, digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def final_records(args, dense) -> list[dict]:
    from compare import BUDGETS, METHODS
    from compare_runs import run_cached

    chosen = json.loads((args.out / "selection.json").read_text())["chosen"]
    records = []
    for budget in BUDGETS:
        for seed in args.seeds:
            for target in args.targets:
                for method in METHODS:
                    try:
                        records.append(run_cached(args, method, chosen[method], budget, target, seed, dense[seed],
                                                  cached_only=True))
                    except SystemExit:
                        continue
    return records


def selection_lines(selection: dict) -> list[str]:
    lines = ["| method | candidate setting | val. accuracy 0.5 / 0.3 | mean | chosen |", "|---|---|---|---|---|"]
    for method, rows in selection["table"].items():
        for row in rows:
            mark = "**yes**" if row["setting"] == selection["chosen"][method] else ""
            accs = " / ".join(f"{a:.2f}" for a in row["val_final"])
            lines.append(f"| {method} | `{json.dumps(row['setting'])}` | {accs} | {row['mean']:.2f} | {mark} |")
    return lines


def result_table(records: list[dict], budget: str, target: float) -> list[str]:
    rows = [r for r in records if r["budget"] == budget and r["target"] == target and not r.get("error")]
    lines = ["| method | seeds | after reg. | **right after the cut** | **final (test)** | final (val) | MACs | "
             "ORT CPU latency b1 / b32 | rank corr. with ablation | Catalyst: margin at freeze (log10) / decided / "
             "prune set zeroed by the dynamics |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cat = [r["catalyst"] for r in mine if r.get("catalyst")]
        extra = (f"{mean_std([c['margin_log10'] for c in cat])} / {mean_std([c['decided_share'] for c in cat])} / "
                 f"{mean_std([c['collapsed_share_of_prune_set'] for c in cat])}") if cat else ""
        lat = f"{mean_std([r['latency']['1'] for r in mine], 3)} / {mean_std([r['latency']['32'] for r in mine], 3)}"
        lines.append(f"| {method} | {len(mine)} | {mean_std([r['acc_after_reg'] for r in mine])} | "
                     f"{mean_std([r['acc_after_cut'] for r in mine])} | **{mean_std([r['acc_final'] for r in mine])}** | "
                     f"{mean_std([r['val_final'] for r in mine])} | {mean_std([r['macs_ratio'] for r in mine], 3)} | "
                     f"{lat} | {mean_std([r['rank_corr'] for r in mine], 3)} | {extra} |")
    return lines


def goal_lines(records: list[dict], budgets, targets) -> list[str]:
    lines = []
    for budget in budgets:
        for target in targets:
            rows = [r for r in records if r["budget"] == budget and r["target"] == target and not r.get("error")]
            means = {m: mean([r["acc_final"] for r in rows if r["method"] == m]) for m in dict.fromkeys(r["method"] for r in rows)}
            if "catalyst" not in means or len(means) < 2:
                continue
            best = max((m for m in means if m != "catalyst"), key=lambda m: means[m])
            diff = means["catalyst"] - means[best]
            order = ", ".join(f"{m} {v:.2f}" for m, v in sorted(means.items(), key=lambda kv: -kv[1]))
            goal = ">= every baseline" if budget == "3+1" else "within 0.2 pt of the best"
            met = diff >= 0 if budget == "3+1" else diff >= -0.2
            lines.append(f"- {budget} epochs, target {target:g}: Catalyst {means['catalyst']:.2f}, best baseline {best} "
                         f"{means[best]:.2f} ({diff:+.2f} pt); goal {goal}: **{'met' if met else 'not met'}**. Order: {order}.")
    return lines


def fairness_lines(fair: dict) -> list[str]:
    lines = [f"Dense model of seed 0 (validation accuracy {fair['val_accuracy_dense']:.2f}%; rescaled: "
             + ", ".join(f"k = {k}: {v:.2f}%" for k, v in fair["val_accuracy_rescaled"].items())
             + f"). Each method then runs {fair['steps']} steps of its phase with every weight trainable (its selected "
             "setting) and decides a prune set for 0.5 of the MACs.", "",
             "| k | method | pruned among rescaled | pruned among untouched | gap (pt) |", "|---|---|---|---|---|"]
    for r in fair["rows"]:
        lines.append(f"| {r['factor']:g} | {r['method']} | {100 * r['pruned_rescaled']:.1f}% | "
                     f"{100 * r['pruned_untouched']:.1f}% | {r['gap_points']:+.1f} |")
    return lines


def latency_aware_lines(args, dense) -> list[str]:
    """Catalyst and L1 at 1+1 epochs with and without --latency-aware ort-cpu: accuracy, MACs, latency."""
    import dataclasses

    from compare_runs import run_cached

    chosen = json.loads((args.out / "selection.json").read_text())["chosen"]
    lines = ["| method | target | latency-aware | final (test) | MACs | ORT CPU latency ratio b1 | b32 |",
             "|---|---|---|---|---|---|---|"]
    for method in ("catalyst", "l1"):
        for target in args.targets:
            for aware in (False, True):
                la_args = dataclasses.replace(args) if hasattr(args, "__dataclass_fields__") else args
                la_args.latency_aware = aware
                rows = []
                for seed in args.seeds:
                    try:
                        rows.append(run_cached(la_args, method, chosen[method], "1+1", target, seed, dense[seed],
                                               cached_only=True))
                    except SystemExit:
                        continue
                rows = [r for r in rows if not r.get("error")]
                if rows:
                    lines.append(f"| {method} | {target:g} | {'on' if aware else 'off'} | "
                                 f"{mean_std([r['acc_final'] for r in rows])} | {mean_std([r['macs_ratio'] for r in rows], 3)} | "
                                 f"{mean_std([r['latency']['1'] for r in rows], 3)} | {mean_std([r['latency']['32'] for r in rows], 3)} |")
    args.latency_aware = False
    return lines


def write_results(args, dense) -> None:
    from compare import BUDGETS
    from results_file import machine_line, write_section

    records = final_records(args, dense)
    (args.out / "compare.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "pruned"} for r in records],
                                                      indent=1))
    selection = json.loads((args.out / "selection.json").read_text())
    commits = sorted({r.get("commit", "?") for r in records})
    lines = ["## Catalyst against the standard pruning methods (`benchmarks/compare.py`)", "",
             f"- machine: {machine_line()}; 1 torch / ORT thread per run; runs made at commit(s) {', '.join(commits)} "
             "in two single-thread lanes (`final --seeds 0` / `final --seeds 1 2`), gathered by `compare.py report`",
             "- data: full Fashion-MNIST; 5,000 training images held out as the validation split (never trained on, "
             "dense models included); small ResNet 32-64-128; dense models: "
             + ", ".join(f"seed {s}: {d.accuracy:.2f}%" for s, d in sorted(dense.items())) + " (test)",
             "- every method: the same optimizer steps in all (budget = regularized/fine-tuning + recovery epochs); "
             "Catalyst cuts when its prune set is exactly zero and gives the unused steps to recovery; one-shot "
             "methods may cut at once (chosen on validation). lr 0.02, batch 128, recipe fashion-mnist", "",
             "### Settings chosen on the validation split (seed 0, 1+1 epochs)", "", *selection_lines(selection)]
    for budget in BUDGETS:
        for target in args.targets:
            lines += ["", f"### {budget} epochs, target {target:g} (test accuracy %, mean ± std over seeds)", "",
                      *result_table(records, budget, target)]
    lines += ["", "### The issue's goals", "", *goal_lines(records, list(BUDGETS), args.targets)]
    lines += ["", "### Latency-aware allocation on and off (`--latency-aware ort-cpu`, 1+1 epochs, 3 seeds)", "",
              *latency_aware_lines(args, dense)]
    fair_path = args.out / "compare_fairness.json"
    if fair_path.is_file():
        lines += ["", "### Fair chance (P2): half of each group's channels rescaled by k, function-preserving", "",
                  *fairness_lines(json.loads(fair_path.read_text()))]
    write_section(SECTION, "\n".join(lines), args.out / "RESULTS.md")
    plot(records, args)


def plot(records: list[dict], args) -> None:
    from matplotlib.figure import Figure

    from compare import BUDGETS

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, len(BUDGETS), squeeze=False)[0]
    for ax, budget in zip(axes, BUDGETS):
        rows = [r for r in records if r["budget"] == budget and not r.get("error")]
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted({(mean([r["macs_ratio"] for r in rows if r["method"] == method and r["target"] == t]),
                              mean([r["acc_final"] for r in rows if r["method"] == method and r["target"] == t]))
                             for t in args.targets})
            ax.plot(*zip(*points), marker="o", lw=1.6 if method == "catalyst" else 1.0, label=method)
        ax.set_title(f"{budget} epochs: final test accuracy")
        ax.set_xlabel("MACs ratio (pruned / dense)")
        ax.set_ylabel("top-1 %")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "accuracy_vs_flops.png", dpi=110, format="png")


def orders_section(args, chosen: dict, dense: dict) -> None:
    """`compare.py orders`: per budget and target, each method's runs over args.seeds (data orders from the dense
    model `dense[budget]`, made by `final --dense-seed`): validation and test accuracy, the accuracy after the
    phase, and the mean pairwise Jaccard overlap of the kept channel sets."""
    import torch

    from catalyst_deploy.inputs.zoo import small_resnet
    from catalyst_deploy.surgery.graph import ChannelGraph
    from compare import BUDGET_MODEL, MODELS, SELECTION_MODEL, setting_for, targets_of
    from compare_runs import run_cached
    from results_file import machine_line, publish
    from stability import overlap

    lines, commits = [], set()
    for budget in args.budgets:
        model = BUDGET_MODEL[budget]
        total = ChannelGraph(small_resnet(in_channels=1, num_classes=10, widths=MODELS[model]),
                             torch.zeros(1, 1, 28, 28)).num_channels
        for target in targets_of(args, budget):
            lines += ["", f"### {budget} epochs, target {target:g}, {model} model (mean ± std over the seeds run)", "",
                      "| method | seeds | final val | final test | after the phase (test) | kept-set overlap |",
                      "|---|---|---|---|---|---|"]
            for method in args.methods:
                setting = setting_for(method, chosen.get(model, chosen[SELECTION_MODEL]), budget)
                runs = []
                for seed in args.seeds:
                    try:
                        runs.append(run_cached(args, method, setting, budget, target, seed, dense[budget], cached_only=True))
                    except SystemExit:
                        continue
                runs = [r for r in runs if not r.get("error")]
                if not runs:
                    continue
                commits |= {r.get("commit", "?") for r in runs}
                agree = f"{overlap([r['pruned'] for r in runs], total)[0]:.3f}" if len(runs) > 1 else "-"
                lines.append(f"| {method} | {', '.join(str(r['seed']) for r in runs)} | "
                             f"{mean_std([r['val_final'] for r in runs])} | {mean_std([r['acc_final'] for r in runs])} | "
                             f"{mean_std([r['acc_after_reg'] for r in runs])} | {agree} |")
    head = (f"## Data orders from one dense model (`benchmarks/compare.py orders`)\n\n`python benchmarks/compare.py orders "
            f"--dense-seed {args.dense_seed} --budgets {' '.join(args.budgets)} --methods {' '.join(args.methods)} "
            f"--seeds {' '.join(map(str, args.seeds))} --cache {args.cache} --out {args.out} --section {args.section}`: "
            f"the runs of `final` with the same arguments, every seed a data order from seed {args.dense_seed}'s dense "
            f"model ({', '.join(sorted({f'{d.accuracy:.2f}%' for d in dense.values()}))}), settings from "
            f"`{args.out / 'selection.json'}`; {machine_line()}; runs made at commit(s) {', '.join(sorted(commits))}.")
    publish(args.section, "\n".join([head, *lines]))
