"""The fair-chance experiment of compare.py (P2): half of every group's channels rescaled by k without
changing the function (`catalyst_deploy.methods.fairness`: BN scale/shift x k, consumer columns x 1/k),
then each method decides a prune set for half the MACs after a short phase in which every weight trains.
A magnitude-fair method prunes the same share of the rescaled and the untouched channels."""

from __future__ import annotations

import copy


def run_fairness(args, dense, factors=(0.1, 10.0), methods=("catalyst", "l1", "group-lasso"), steps: int = 300,
                 settings: dict | None = None) -> dict:
    """`settings` maps a method to the setting it runs with (default: compare.py's selection)."""
    import torch

    from catalyst_deploy.inputs.data import load_dataset, make_loaders
    from catalyst_deploy.methods.fairness import rescale_half, share_pruned_gap
    from catalyst_deploy.inputs.models import load_model
    from catalyst_deploy.run.train import evaluate

    splits = load_dataset(args.data, val_size=5000, train_limit=2000 if args.quick else None)
    train, val = make_loaders(splits, 128, seed=0, eval_split="val")
    example = torch.randn(1, 1, 28, 28)
    reference = load_model(str(dense.path))
    rows, check = [], {}
    for factor in factors:
        for method in methods:
            torch.manual_seed(0)  # every method and script starts from the same draws (shuffle, augmentation)
            model = copy.deepcopy(reference)
            code = rescale_half(model, example, factor, seed=3)
            check[str(factor)] = evaluate(model, val, torch.device("cpu"))
            mask = decide(method, model, train, example, 8 if args.quick else steps, (settings or {}).get(method))
            rows.append({"factor": factor, "method": method, "gap_points": round(share_pruned_gap(mask, code), 2),
                         "pruned_rescaled": float(mask[code == 1].float().mean()),
                         "pruned_untouched": float(mask[code == 0].float().mean())})
            print(f"fair chance k={factor:g} {method}: gap {rows[-1]['gap_points']:+.1f} pt", flush=True)
    return {"rows": rows, "val_accuracy_rescaled": check, "val_accuracy_dense": evaluate(reference, val, torch.device("cpu")),
            "steps": steps}


def decide(method_name: str, model, loader, example, steps: int, setting: dict | None = None):
    """The prune set for half the MACs that `method_name` (with `setting`, else compare.py's selected setting
    where it has one) decides after `steps` optimizer steps with every weight trainable."""
    import json
    from pathlib import Path

    import torch

    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.config import load_config
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.surgery.macs import count_macs
    from catalyst_deploy.methods import make_method
    from catalyst_deploy.run.train import PhaseSettings, train_phase

    selection = Path(__file__).with_name("selection.json")
    if setting is None:
        from compare import SELECTION_MODEL  # selection.json is keyed by dense model, then method

        chosen_all = json.loads(selection.read_text())["chosen"] if selection.is_file() else {}
        setting = chosen_all.get(SELECTION_MODEL, {}).get(method_name, {})
    chosen = {k: v for k, v in setting.items() if k != "cut"}
    if method_name == "catalyst":  # knobs it does not name keep the values its results were made with
        from catalyst_deploy.methods.catalyst import LITERAL

        chosen["catalyst"] = {**LITERAL, **chosen.get("catalyst", {})}
    graph = ChannelGraph(model, example)
    macs = count_macs(model, example)[0]
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.5 * macs, None, 0.9)
    cfg = load_config("fashion-mnist", model="zoo:tiny_cnn", method=method_name, **chosen)
    method = make_method(cfg)
    method.start(graph, budget, steps)
    used = 0
    if method_name != "l1":
        used = train_phase(model, loader, torch.device("cpu"), PhaseSettings(steps, cfg.lr, schedule=method.schedule),
                           label=method_name, hooks=method, overrides=method.param_overrides()).steps
    return method.finish(used).mask
