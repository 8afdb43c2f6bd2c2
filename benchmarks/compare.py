"""Catalyst against the standard pruning methods on Fashion-MNIST, at equal optimizer steps, with every
method's hyperparameters chosen on a validation split held out of the training data.

    python benchmarks/compare.py select                 # the grid, seed 0, 1+1 epochs, on the validation split
    python benchmarks/compare.py final                  # selected settings, 3 seeds x 2 targets x 2 budgets, test split
    python benchmarks/compare.py final --seeds 1 2      # a share of the runs (a second lane); runs are cached
    python benchmarks/compare.py fairness               # the fair-chance experiment (P2) on seed 0's dense model
    python benchmarks/compare.py report                 # RESULTS.md's compare section from the cached runs
    python benchmarks/compare.py orders --dense-seed 0 --budgets 1+1 3+1 --section NAME   # data orders, one dense

1. Dense small ResNets (one per seed) are trained on the training split minus 5,000 held-out images
   (compare_dense.py), and each channel's single-channel ablation loss is measured on the held-out split.
2. `select`: every method runs each of its candidate settings (GRID) on seed 0 at both targets with the 1+1
   budget; the setting with the best mean validation accuracy is kept (selection.json).
   For the one-shot methods the candidates include *when* to cut: at once (all steps go to recovery, as
   Catalyst's early cut gives its unused steps to recovery) or after the fine-tuning phase.
3. `final`: the selected settings, 3 seeds, targets 0.5 and 0.3, budgets 1+1 and 3+1 epochs; test split.
4. Every run goes through `catalyst_deploy.api.prune`: the same data, steps, learning-rate schedule family,
   surgery and recovery for every method. Each record is cached (cache/records/KEY.json) with its commit.

Writes compare.json, selection.json, compare_fairness.json, the plots and the `compare` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from catalyst_deploy.method_table import LITERAL  # noqa: E402 (torch-free: --help stays quick)

DATA = f"fashion-mnist:{HERE.parents[1] / 'shared' / 'data' / 'fashion-mnist'}"
METHODS = ["catalyst", "catalyst-gated", "depgraph", "l1", "group-lasso", "slimming", "taylor", "random"]
VAL_SIZE = 5000
BUDGETS = {"1+1": (1.0, 1.0), "3+1": (3.0, 1.0), "8+4": (8.0, 4.0)}  # regularized (or fine-tuning) + recovery epochs
TARGETS = {"1+1": (0.5, 0.3), "3+1": (0.5, 0.3), "8+4": (0.3, 0.15)}  # MACs shares; the long budget at harder ones
SELECTION_BUDGET = "1+1"
# The dense models: the short budgets on the small ResNet 32-64-128; the long budget on a narrower one (16-32-64),
# because on the wider one, 12 epochs after the cut recovered a random prune set to within 0.03 / 0.42 pt of L1's
# at 0.3 / 0.15 of the MACs (seed 0): a yardstick that cannot tell prune sets apart.
MODELS = {"wide": (32, 64, 128), "narrow": (16, 32, 64)}
BUDGET_MODEL = {"1+1": "wide", "3+1": "wide", "8+4": "narrow"}
SELECTION_MODEL = "wide"  # the grid runs here; a model without a grid of its own reuses this one's choices
# At the long budget the one-shot methods cut at once (Taylor after its short scoring window) and get every
# epoch after the cut: 12 epochs of recovery against the regularized methods' 8 + 4. Every other setting is the
# one chosen at the selection budget (none of them is a length: the regularized methods' strengths are per
# step, and Catalyst's schedule is given as shares of its phase).
LONG_BUDGET_CUT = {"l1": "start", "random": "start", "taylor": "early"}

# Candidate settings per method, every knob explicit (a cached run stays valid when a default changes).
# Catalyst (the paper's form): how the task reaches the catalyst (no term, or the forward-pass term with a minus
# sign) x the prune pressure, at strength 4 (the sum of eta*lambda by the deadline). The rewind setting: its
# deadline and strength, each pair one the step cap (step_cap) does not bind here, so that the selection runs the
# strength the long budget runs (strength 4 ran 0.84 here with the freeze at half the phase, 215 steps, and 0.41
# at a quarter, but 4 and 3.4 on the long budget's 1720 and 860; docs/method.md, "Which form is the default").
# The gated form: its schedule's step_max at its earlier chosen deadline, gates at the base learning rate and
# plain SGD (faster gates were measured in method_study.py: they lose the fair chance or let the freeze, not the
# dynamics, make the set). The regularized baselines' strengths come in two rounds (the finer one, 3e-4 and 3e-3,
# so that no baseline is held below its best); the one-shot methods' only knob is when to cut.
GATED = {"gate_lr": 1.0, "invariant": False, "deadline": 0.6}
# The paper form's rewind setting (docs/method.md, "The set or the phase?"): chosen at the long budget, so its
# deadline is a candidate here too. Its window (at most one epoch) was chosen at the long budget and does not
# bind here (half of a one-epoch phase comes first).
REWIND = {"bypass": "plus", "center": True, "center_groups": True, "pressure": 0.0, "cost_aware": False,
          "rewind": True, "strength": 4.0, "window_epochs": 1.0}
GRID: dict[str, list[dict]] = {
    "catalyst": [{"catalyst": {"bypass": b, "pressure": p, "strength": 4.0}} for b in ("none", "minus")
                 for p in (0.02, 0.1)] + [{"catalyst": {**REWIND, "deadline": d, "strength": st}}
                                          for d, st in ((0.25, 0.4), (0.5, 0.4), (0.5, 0.8))]
                + [{"catalyst": {**REWIND, "deadline": 0.5, "strength": 0.4, "rewind": False}}],
    "catalyst-gated": [{"catalyst_gated": {"step_max": m, **GATED}} for m in (0.05, 0.2)],
    "group-lasso": [{"reg_strength": r} for r in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)],
    "depgraph": [{"reg_strength": r} for r in (1e-4, 5e-4, 2e-3)],  # around torch-pruning's own default, 5e-4
    "slimming": [{"reg_strength": r} for r in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)],
    "l1": [{"cut": "start"}, {"cut": "after"}],
    "random": [{"cut": "start"}, {"cut": "after"}],
    "taylor": [{"cut": "early"}, {"cut": "after"}],
}
CUT_PHASE = {"start": 0.0, "early": 0.1}  # epochs of the fine-tuning phase before a one-shot cut


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["select", "final", "fairness", "report", "dense", "orders"],
                   help="orders: the cached runs of `final --dense-seed N` (data orders from one dense model), "
                        "mean and kept-set overlap per method, as a RESULTS.md section (--section)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", type=float, nargs="+", default=None, help="default: each budget's TARGETS")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                   help="select/dense/fairness: the dense models to work on")
    p.add_argument("--latency-aware", action="store_true", help="every run with --latency-aware ort-cpu")
    p.add_argument("--data", default=DATA)
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dense-seed", type=int, default=None,
                   help="final: start every seed from this seed's dense model (data-order seeds only: the "
                        "stability runs); default: each seed its own dense model")
    p.add_argument("--quick", action="store_true", help="tiny data subsets and step caps (tests)")
    p.add_argument("--section", default=None, help="select: also write this run's table as a RESULTS.md section "
                                                    "(a selection on another dense model, beside the main one)")
    return p.parse_args(argv)


def run_config(args, method: str, setting: dict, budget: str, target: float, seed: int, dense_path: Path):
    """The api.load_config overrides of one run: the recipe's optimizer, this run's budget and setting."""
    from catalyst_deploy.api import load_config

    reg, recover = BUDGETS[budget]
    setting = {k: v for k, v in setting.items() if not k.startswith("_")}  # "_..." keys: study bookkeeping
    if method == "catalyst":  # its knobs unnamed in a setting keep the values the records were made with
        setting["catalyst"] = {**LITERAL, **setting.get("catalyst", {})}
    cut = setting.pop("cut", "after")
    if cut in CUT_PHASE:  # a one-shot cut earlier: the fine-tuning steps it skips go to recovery
        recover, reg = recover + reg - CUT_PHASE[cut], CUT_PHASE[cut]
    extra = dict(train_limit=2000, test_limit=500, steps_per_epoch=8) if args.quick else {}
    return load_config("fashion-mnist", model=str(dense_path), data=args.data, target_flops=f"{target:g}", method=method,
                       reg_epochs=reg, recover_epochs=recover, seed=seed, threads=args.threads, val_size=VAL_SIZE,
                       device="cpu", checkpoint_every=0, latency_aware="ort-cpu" if args.latency_aware else None,
                       **extra, **setting)


def main(argv=None) -> int:
    args = parse(argv)  # before torch is imported: --help and bad arguments answer at once

    import torch

    from compare_dense import dense_models
    from compare_runs import run_cached

    torch.set_num_threads(args.threads)
    start = time.time()
    cache: dict[str, dict] = {}

    def dense(model: str) -> dict:  # seed -> DenseModel, trained and cached on first use
        if model not in cache:
            cache[model] = dense_models(args, MODELS[model])
        return cache[model]

    if args.stage == "dense":
        for model in args.models:
            dense(model)
    elif args.stage == "select":
        for model in args.models:
            for method in args.methods:
                for setting in GRID[method]:
                    for target in selection_targets(args, model):
                        run_cached(args, method, setting, SELECTION_BUDGET, target, 0, dense(model)[0])
            write_selection(args, model, dense(model))
    elif args.stage == "final":
        chosen = json.loads((args.out / "selection.json").read_text())["chosen"]
        for model in {BUDGET_MODEL[b] for b in args.budgets} - set(chosen):  # no grid of its own: the wide one's
            print(f"{model}: settings chosen on the {SELECTION_MODEL} model are reused", flush=True)
            chosen[model] = chosen[SELECTION_MODEL]
        for budget in args.budgets:
            model = BUDGET_MODEL[budget]
            for seed in args.seeds:
                for target in targets_of(args, budget):
                    for method in args.methods:
                        dense_seed = seed if args.dense_seed is None else args.dense_seed
                        run_cached(args, method, setting_for(method, chosen[model], budget), budget, target, seed,
                                   dense(model)[dense_seed])
    elif args.stage == "orders":
        from compare_report import orders_section

        if args.dense_seed is None or not args.section:
            raise SystemExit("orders: name the dense model (--dense-seed) and the RESULTS.md section (--section)")
        chosen = json.loads((args.out / "selection.json").read_text())["chosen"]
        orders_section(args, chosen, {b: dense(BUDGET_MODEL[b])[args.dense_seed] for b in args.budgets})
    elif args.stage == "fairness":
        from compare_fairness import run_fairness

        (args.out / "compare_fairness.json").write_text(json.dumps(run_fairness(args, dense("wide")[0]), indent=1))
    else:
        from compare_report import write_results

        write_results(args, dense)
    print(f"{args.stage} done in {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


def setting_for(method: str, chosen: dict, budget: str) -> dict:
    """The selected setting of `method`, with the long budget's cut for the one-shot methods."""
    if budget == "8+4" and method in LONG_BUDGET_CUT:
        return {**chosen.get(method, {}), "cut": LONG_BUDGET_CUT[method]}
    return chosen[method]


def targets_of(args, budget: str) -> tuple[float, ...]:
    return tuple(args.targets) if args.targets else TARGETS[budget]


def selection_targets(args, model: str) -> tuple[float, ...]:
    """The targets of the budgets that run on `model`: settings are chosen where they are used."""
    if args.targets:
        return tuple(args.targets)
    return tuple(dict.fromkeys(t for b, m in BUDGET_MODEL.items() if m == model for t in TARGETS[b]))


def write_selection(args, model: str, dense: dict) -> None:
    """For each method, the candidate with the best mean validation accuracy over the targets on `model`."""
    from compare_runs import run_cached

    table, chosen = {}, {}
    for method in args.methods:
        scores = []
        for setting in GRID[method]:
            accs = [run_cached(args, method, setting, SELECTION_BUDGET, t, 0, dense[0], cached_only=True)["val_final"]
                    for t in selection_targets(args, model)]
            scores.append((sum(accs) / len(accs), setting, accs))
        table[method] = [{"setting": s, "val_final": a, "mean": round(m, 3)} for m, s, a in scores]
        chosen[method] = max(scores, key=lambda x: x[0])[1]
    path = args.out / "selection.json"
    old = json.loads(path.read_text()) if path.is_file() else {"chosen": {}, "table": {}}
    old["chosen"].setdefault(model, {}).update(chosen)
    old["table"].setdefault(model, {}).update(table)
    path.write_text(json.dumps(old, indent=1))
    print(json.dumps(chosen, indent=1), flush=True)
    if args.section:
        from compare_report import selection_lines
        from results_file import machine_line, publish

        head = (f"`python benchmarks/compare.py select --models {model} --methods {' '.join(args.methods)} --seeds 0 "
                f"--cache {args.cache} --out {args.out} --section {args.section}`: seed 0's dense model "
                f"({dense[0].accuracy:.2f}%), "
                f"{SELECTION_BUDGET} epochs, validation split; {machine_line()}.")
        publish(args.section, "\n".join([head, "", *selection_lines({"table": table, "chosen": chosen})]))


if __name__ == "__main__":
    raise SystemExit(main())
