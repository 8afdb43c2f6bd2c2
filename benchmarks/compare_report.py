"""The `compare.py` section of benchmarks/RESULTS.md: tables of mean ± std over seeds, the checks of the
issue's expectations, the fairness and bifurcation results. Text only; plots are in compare_plots.py, and
results_file.write_section puts the section in place."""

from __future__ import annotations

import math
import statistics

SECTION = "compare"  # benchmarks/RESULTS.md section, between <!-- compare:begin --> and <!-- compare:end -->
LN10 = math.log(10)
CLIPPED_MARGIN = 99.9  # log c is clipped to +-50 in the reports: a margin of 100 means F = 0 / d = 0 everywhere


# ---- numbers -------------------------------------------------------------------------------------
def finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_std(values, digits: int = 2, scale: float = 1.0) -> str:
    """'mean ± std (sample std over seeds)', the value alone for one seed, 'n/a' for none."""
    vals = [v * scale for v in finite(values)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def mean_of(values) -> float | None:
    vals = finite(values)
    return statistics.mean(vals) if vals else None


def ok_records(records: list[dict], target: float, method: str | None = None) -> list[dict]:
    """Records of one target (and method) whose run succeeded."""
    return [r for r in records if r["target_flops"] == target and not r.get("error")
            and (method is None or r["method"] == method)]


def latency_batches(records: list[dict]) -> list[str]:
    batches = {b for r in records for b in (r.get("ort_cpu_latency_ratio_by_batch") or {})}
    return sorted(batches, key=int)


# ---- tables --------------------------------------------------------------------------------------
def dense_table(dense: list[dict]) -> list[str]:
    lines = ["| seed | test accuracy (%) | test accuracy after each epoch | training time |", "|---|---|---|---|"]
    for d in dense:
        cached = " (cached)" if d["cached"] else ""
        lines.append(f"| {d['seed']} | {d['accuracy']:.2f} | {', '.join(f'{a:.2f}' for a in d['curve'])} | "
                     f"{d['train_seconds'] / 60:.1f} min{cached} |")
    return lines


def method_table(records: list[dict], target: float, methods: list[str]) -> list[str]:
    """One row per method at one target: accuracies, MACs, params, ORT latency ratio, as mean ± std."""
    batches = latency_batches(records)
    head = ["method", "seeds", "acc after regularization", "**acc right after surgery**", "**acc after recovery**",
            "MACs ratio", "params (ratio)"] + [f"ORT CPU latency ratio b{b}" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        rows = ok_records(records, target, method)
        failed = [r for r in records if r["target_flops"] == target and r["method"] == method and r.get("error")]
        if not rows:
            lines.append(f"| {method} | 0 | failed: {failed[0]['error'] if failed else 'not run'} |")
            continue
        cells = [method, f"{len(rows)}" + (f" ({len(failed)} failed)" if failed else ""),
                 mean_std(r["acc_after_reg"] for r in rows), mean_std(r["acc_after_surgery"] for r in rows),
                 mean_std(r["acc_final"] for r in rows), mean_std((r["macs_ratio"] for r in rows), 3),
                 f"{mean_std((r['params_pruned'] for r in rows), 1, 1e-3)}K ({mean_std((r['params_ratio'] for r in rows), 3)})"]
        cells += [mean_std(((r.get("ort_cpu_latency_ratio_by_batch") or {}).get(b) for r in rows), 3) for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def expectation_lines(records: list[dict], targets: list[float], methods: list[str]) -> list[str]:
    """The issue's expectations, each with the numbers that confirm or contradict it."""
    lines = []
    for target in targets:
        cat = ok_records(records, target, "catalyst")
        if cat:
            drops = [r["acc_after_reg"] - r["acc_after_surgery"] for r in cat]
            worst = max(drops, key=abs)
            verdict = "yes" if abs(worst) <= 0.1 else "no"
            lines.append(f"- target {target:g}: Catalyst's cut costs {mean_std(drops)} pt (after regularization minus "
                         f"right after surgery; largest change {worst:+.2f}); unchanged within 0.1 pt in every seed: "
                         f"**{verdict}**.")
        l1 = ok_records(records, target, "l1")
        if l1:
            lines.append(f"- target {target:g}: one-shot l1 right after the cut: {mean_std(r['acc_after_surgery'] for r in l1)} "
                         f"(from {mean_std(r['acc_after_reg'] for r in l1)} before it).")
        lines += final_ranking(records, target, methods)
    return lines


def final_ranking(records: list[dict], target: float, methods: list[str]) -> list[str]:
    means = {m: mean_of(r["acc_final"] for r in ok_records(records, target, m)) for m in methods}
    means = {m: v for m, v in means.items() if v is not None}
    if "catalyst" not in means or len(means) < 2:
        return []
    order = sorted(means, key=means.get, reverse=True)
    best_other = next(m for m in order if m != "catalyst")
    diff = means["catalyst"] - means[best_other]
    verdict = "at or above" if diff >= 0 else "below"
    return [f"- target {target:g}, after recovery: Catalyst {means['catalyst']:.2f} is rank {order.index('catalyst') + 1} "
            f"of {len(order)}, {verdict} the best baseline mean ({best_other} {means[best_other]:.2f}, "
            f"difference {diff:+.2f} pt). Order: " + ", ".join(f"{m} {means[m]:.2f}" for m in order) + "."]


def fairness_table(fairness: list[dict], function_check: dict) -> list[str]:
    lines = ["| setting | k | method | pruned among rescaled | pruned among untouched | gap (pt) |",
             "|---|---|---|---|---|---|"]
    for r in fairness:
        lines.append(f"| {r['setting']} | {r['factor']:g} | {r['method']} | {100 * r['share_rescaled']:.1f}% "
                     f"({r['channels_rescaled']} ch) | {100 * r['share_untouched']:.1f}% ({r['channels_untouched']} ch) "
                     f"| {r['gap_points']:+.1f} |")
    checks = ", ".join(f"k = {k:g}: {acc:.2f}%" for k, acc in function_check.items())
    return lines + ["", f"Function check, test accuracy of the rescaled dense model: {checks}."]


def margin_text(margin_ln: float | None, short: bool = False) -> str:
    """A bifurcation margin (natural log, as the reports store it) in log10 units; ∞ when it is clipped."""
    if margin_ln is None:
        return "n/a"
    if margin_ln >= CLIPPED_MARGIN:
        return "∞" if short else "∞ (every pruned F = 0, every kept d = 0)"
    return f"{margin_ln / LN10:+.2f}"


def bifurcation_table(records: list[dict]) -> list[str]:
    lines = ["| target | seed | margin at the freeze (log10 c) | margin at the cut (log10 c) | channels with c < 0.1 or c > 10 at the cut "
             "| frozen at step | forced by the deadline | frozen set exactly zero |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["method"] != "catalyst" or r.get("error"):
            continue
        lines.append(f"| {r['target_flops']:g} | {r['seed']} | {margin_text(r.get('bifurcation_margin_at_freeze'))} | "
                     f"{margin_text(r.get('bifurcation_margin'))} | {100 * r['decided_share']:.1f}% | "
                     f"{r['frozen_at_step']} | {r['freeze_forced']} | {r['frozen_at_zero']} |")
    return lines


# ---- the section ---------------------------------------------------------------------------------
def reuse_lines(records: list[dict]) -> list[str]:
    """One line naming the runs taken from the cache (`--reuse`), by commit and date they were made."""
    made: dict[tuple[str, str], list[str]] = {}
    for r in records:
        if r.get("reused"):
            made.setdefault((r["reused"]["commit"], r["reused"]["date"][:10]), []).append(
                f"{r['method']} {r['target_flops']:g}/s{r['seed']}")
    if not made:
        return []
    parts = [f"{len(runs)} at commit {commit} ({date})" for (commit, date), runs in made.items()]
    methods = sorted({r["method"] for r in records if r.get("reused")})
    return [f"reused from the cache (`--reuse`, same settings, made earlier): {', '.join(methods)}; "
            f"{sum(len(v) for v in made.values())} runs, " + "; ".join(parts)
            + ". Their wall time is not in the total above"]


def format_section(run: dict, records: list[dict], dense: list[dict], fairness: list[dict],
                   function_check: dict) -> str:
    """The whole RESULTS.md section; `run` holds the command, machine, budget and timing lines."""
    methods = run["methods"]
    lines = ["## Catalyst against the standard pruning methods (`benchmarks/compare.py`)", ""]
    if run["quick"]:
        lines += ["**Quick smoke run (`--quick`): data subsets, short phases, one seed. Not evidence.**", ""]
    lines += [f"Command: `{run['command']}`", "", *[f"- {line}" for line in run["about"]], *reuse_lines(records),
              "", "### Dense models", "", *dense_table(dense), ""]
    for target in run["targets"]:
        lines += [f"### Target FLOPs {target:g} (mean ± std over seeds; accuracy in %)", "",
                  *method_table(records, target, methods), ""]
    lines += ["### The expectations of issue 4, measured", "", *expectation_lines(records, run["targets"], methods), ""]
    if fairness:
        lines += ["### Fair chance (P2): half of each group's channels rescaled by k, function-preserving", "",
                  run["fairness_about"], "", *fairness_table(fairness, function_check), "", "![fairness](fairness.png)", ""]
    lines += ["### Bifurcation (P3): c = d/‖F‖ of every channel over Catalyst's regularized phase", "",
              *bifurcation_table(records), "", "![bifurcation trajectories](bifurcation_trajectories.png)", "",
              "![accuracy vs FLOPs](accuracy_vs_flops.png)", ""]
    return "\n".join(lines)
