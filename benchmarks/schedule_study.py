"""Catalyst's schedule on the converged Fashion-MNIST model (issue 4's investigation): what decides its
prune set, and whether its deficit after recovery comes from the regularized phase or from the set.

    python benchmarks/schedule_study.py                     # every variant (~45 min on the idle 2-core machine)
    python benchmarks/schedule_study.py --only default l1   # some of them

Every run goes through `catalyst_deploy.api.prune` with compare.py's budget (1 regularized + 1 recovery
epoch, recipe fashion-mnist, seed 0) from compare.py's cached dense model of seed 0 (trained first if it
is missing). A *transplant* runs l1's schedule (plain fine-tuning, one-shot cut, recovery) with a prune
set taken from another variant's run: same set, different phase, or same phase, different set.

Writes benchmarks/schedule_study.json and the `catalyst-schedule` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_file import git_commit, machine_line, write_section  # noqa: E402

from catalyst_deploy.catalyst import METHODS  # noqa: E402
from catalyst_deploy.catalyst.baselines import L1Ranking  # noqa: E402

SECTION = "catalyst-schedule"
DESIGN = {"c0": 1.0, "rank": "global"}  # DESIGN.md 2.2: every channel on the boundary, raw c compared globally


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    method: str = "catalyst"
    catalyst: dict = field(default_factory=dict)
    targets: tuple[float, ...] = (0.3,)
    transplant: tuple[str, str] | None = None  # (how, source variant): "set", "l1-counts", "group-quantile"


VARIANTS = [
    Variant("design", "c0 = 1, lambda step 0.01 -> 0.05, raw c ranked globally", catalyst=DESIGN, targets=(0.3, 0.5)),
    Variant("ramp-x3", "as design, lambda step 0.03 -> 0.3", catalyst={**DESIGN, "step0": 0.03, "step_max": 0.3}),
    Variant("ramp-x10", "as design, lambda step 0.1 -> 0.5", catalyst={**DESIGN, "step0": 0.1, "step_max": 0.5}),
    Variant("c0-1.02", "c0 = 1.02, global rank", catalyst={"c0": 1.02, "rank": "global"}),
    Variant("c0-1.05", "c0 = 1.05, global rank", catalyst={"c0": 1.05, "rank": "global"}, targets=(0.3, 0.5)),
    Variant("c0-1.2", "c0 = 1.2, global rank", catalyst={"c0": 1.2, "rank": "global"}),
    Variant("c0-1.05-gentle", "c0 = 1.05, lambda step 0.003 -> 0.03",
            catalyst={"c0": 1.05, "rank": "global", "step0": 0.003, "step_max": 0.03}),
    Variant("c0-1.05-chi3", "c0 = 1.05, decided at c >= 3", catalyst={"c0": 1.05, "rank": "global", "c_hi": 3.0}),
    Variant("group-rank", "c0 = 1, c ranked within groups", catalyst={"c0": 1.0, "rank": "group"}),
    Variant("default", "c0 = 1.05, c ranked within groups (the shipped default)", targets=(0.3, 0.5)),
    Variant("default-hold", "as default, but once the decided set covers the target, lambda is held until every "
            "channel is decided (c >= 1.5 or c < 1) or the deadline", catalyst={"hold": True}, targets=(0.3, 0.5)),
    Variant("l1", "one-shot L1 (the baseline)", method="l1"),
    Variant("set-of-design", "l1's schedule, design's prune set", method="l1", transplant=("set", "design")),
    Variant("set-of-c0-1.05", "l1's schedule, c0-1.05's prune set", method="l1", transplant=("set", "c0-1.05")),
    Variant("l1-counts", "l1's schedule; per group, as many channels as l1 prunes, the highest c of c0-1.05 at the freeze",
            method="l1", transplant=("l1-counts", "c0-1.05")),
    Variant("quantile-of-c0-1.05", "l1's schedule; c0-1.05's c at the freeze ranked within groups, MACs fill",
            method="l1", transplant=("group-quantile", "c0-1.05")),
]


class Transplant(L1Ranking):
    """l1's schedule (plain fine-tuning, then the cut) with a given prune set: `chosen` goes first."""

    name = "transplant"
    summary = "l1's schedule with a given prune set (schedule_study.py)"
    chosen: list[int] = []

    def scores(self) -> torch.Tensor:
        s = torch.zeros(self.graph.num_channels)
        s[Transplant.chosen] = 1.0
        return s


def transplant_set(how: str, source: dict, l1: dict | None, graph, macs0: int, target: float, cfg) -> list[int]:
    """The prune set a transplant uses, from the source run's report (and l1's, for "l1-counts")."""
    if how == "set":
        return source["pruned_channels"]
    log_c = torch.tensor([-1e9 if v is None else v for v in source["log_c_at_freeze"]])
    groups = list(zip(torch.arange(graph.num_channels).split(graph.sizes), log_c.split(graph.sizes)))
    if how == "l1-counts":
        l1_set = set(l1["pruned_channels"])
        return [int(i) for idx, c in groups for i in idx[c.argsort(descending=True)][:sum(int(j) in l1_set for j in idx)]]
    from catalyst_deploy.catalyst.controller import group_quantiles

    mask = graph.select_to_target(group_quantiles(log_c, graph), target * macs0, cfg.round_to, cfg.max_layer_ratio)
    return mask.nonzero().flatten().tolist()


def per_group(pruned: list[int], sizes: list[int]) -> list[int]:
    chosen, out, start = set(pruned), [], 0
    for n in sizes:
        out.append(sum(i in chosen for i in range(start, start + n)))
        start += n
    return out


def run_variant(v: Variant, target: float, dense_path: Path, reports: dict, graph, macs0: int, out_root: Path,
                data: str) -> dict:
    from catalyst_deploy.api import load_config, prune

    cfg = load_config("fashion-mnist", model=str(dense_path), data=data, target_flops=f"{target:g}",
                      method="transplant" if v.transplant else v.method, out=out_root / f"{v.name}_t{target:g}",
                      overwrite=True, reg_epochs=1.0, recover_epochs=1.0, seed=0, threads=1,
                      catalyst=v.catalyst or None)
    if v.transplant:
        how, source = v.transplant
        Transplant.chosen = transplant_set(how, reports[source, target], reports.get(("l1", target)), graph, macs0,
                                         target, cfg)
    t0 = time.time()
    report = prune(cfg, log=lambda line: None)
    reports[v.name, target] = report
    cat = report.get("catalyst", {})
    at_freeze = report.get("log_c_at_freeze") or []
    return {"variant": v.name, "what": v.what, "target_flops": target, "accuracy": report["accuracy"],
            "macs_ratio": report["macs"]["ratio"], "params_ratio": report["params"]["ratio"],
            "pruned_per_group": per_group(report["pruned_channels"], graph.sizes),
            "frozen_at_step": cat.get("frozen_at_step"), "freeze_forced": cat.get("freeze_forced"),
            "kept_d0_at_freeze": sum(1 for c in at_freeze if c is not None and c < -40) if at_freeze else None,
            "seconds": round(time.time() - t0), "commit": git_commit()}


def format_section(rows: list[dict], sizes: list[int], about: list[str]) -> str:
    lines = ["## Catalyst's schedule: what decides its prune set (`benchmarks/schedule_study.py`)", "",
             *[f"- {a}" for a in about], "",
             f"Channels pruned per group are listed in the graph's group order, group sizes {sizes} (the first "
             "is the last stage's residual group, which feeds the classifier).", "",
             "| variant | what | target | after reg. | right after cut | after recovery | MACs | params | "
             "pruned per group | freeze step (forced) | d = 0 at freeze |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["accuracy"]
        freeze = "" if r["frozen_at_step"] is None else f"{r['frozen_at_step']} ({'yes' if r['freeze_forced'] else 'no'})"
        lines.append(f"| {r['variant']} | {r['what']} | {r['target_flops']:g} | {a['after_regularization']:.2f} | "
                     f"{a['after_surgery']:.2f} | **{a['final']:.2f}** | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{r['pruned_per_group']} | {freeze} | {'' if r['kept_d0_at_freeze'] is None else r['kept_d0_at_freeze']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from catalyst_deploy.models import load_model
    from catalyst_deploy.surgery import ChannelGraph, count_macs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=[v.name for v in VARIANTS], help="run these variants (and their sources)")
    p.add_argument("--cache", type=Path, default=HERE / "cache", help="compare.py's cache (dense model of seed 0)")
    p.add_argument("--data", default=f"fashion-mnist:{HERE.parents[1] / 'shared' / 'data' / 'fashion-mnist'}")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dense = sorted(args.cache.glob("dense_*_w32-64-128_e10_*_nall_s0.pt"))
    if not dense:
        sys.exit("error: no dense model of seed 0 in the cache: run `python benchmarks/compare.py --dense-only --seeds 0`")
    model = load_model(str(dense[0]))
    example = torch.randn(1, 1, 28, 28)
    graph, macs0 = ChannelGraph(model, example), count_macs(model, example)[0]
    METHODS[Transplant.name] = Transplant  # a --method name for this study only
    wanted = set(args.only or [v.name for v in VARIANTS])
    for v in VARIANTS:  # a transplant needs its source's run (and l1's)
        if v.name in wanted and v.transplant:
            wanted |= {v.transplant[1]} | ({"l1"} if v.transplant[0] == "l1-counts" else set())
    start, rows, reports = time.time(), [], {}
    for v in VARIANTS:
        if v.name not in wanted:
            continue
        for target in v.targets:
            rows.append(run_variant(v, target, dense[0], reports, graph, macs0, args.cache / "schedule", args.data))
            a = rows[-1]["accuracy"]
            print(f"{v.name} {target:g}: after reg {a['after_regularization']:.2f}, after cut {a['after_surgery']:.2f}, "
                  f"final {a['final']:.2f}, per group {rows[-1]['pruned_per_group']} ({rows[-1]['seconds']} s)", flush=True)
    if args.only and (HERE / "schedule_study.json").is_file():  # update these rows, keep the others
        fresh = {(r["variant"], r["target_flops"]) for r in rows}
        kept = [r for r in json.loads((HERE / "schedule_study.json").read_text())
                if (r["variant"], r["target_flops"]) not in fresh]
        order = {v.name: i for i, v in enumerate(VARIANTS)}
        rows = sorted(kept + rows, key=lambda r: (order.get(r["variant"], len(order)), r["target_flops"]))
    commits = sorted({r.get("commit", "?") for r in rows})
    about = [f"machine: {machine_line()}; torch {torch.__version__}, 1 thread; rows made at commit(s) {', '.join(commits)}",
             f"last command: `python benchmarks/schedule_study.py{' --only ' + ' '.join(args.only) if args.only else ''}` "
             f"(`--only` reruns those rows and keeps the others from schedule_study.json); wall time "
             f"{(time.time() - start) / 60:.1f} min",
             f"dense model `{dense[0].name}` (seed 0), full Fashion-MNIST; one seed: differences under ~0.3 pt are noise"]
    (HERE / "schedule_study.json").write_text(json.dumps(rows, indent=1))
    write_section(SECTION, format_section(rows, graph.sizes, about), args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
