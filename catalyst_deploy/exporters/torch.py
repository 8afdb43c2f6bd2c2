"""The pruned model for PyTorch users: the whole module, its state dict, and the surgery plan.

    save_torch_module(model, example, "out/model.pt", plan=result.plan)
    # -> out/model.pt (torch.save(model)), out/model.state_dict.pt, out/plan.json
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from catalyst_deploy.errors import UsageError
from catalyst_deploy.atomic import atomic_path, torch_save_file
from catalyst_deploy.exporters.validation import OutputCheck, check_outputs

PLAN_FILENAME = "plan.json"


def torch_artifact_paths(path: str | Path) -> dict[str, Path]:
    """Where `save_torch_module` writes for a module path: module, state_dict, plan."""
    path = Path(path)
    return {"module": path, "state_dict": path.with_name(f"{path.stem}.state_dict.pt"),
            "plan": path.with_name(PLAN_FILENAME)}


def save_torch_module(model, example, path: str | Path, *, plan: dict | None = None,
                      atol: float = 1e-6) -> OutputCheck:
    """Write `torch.save(model)` at `path`, the state dict beside it, and `plan` (a JSON-able dict, e.g.
    the surgery plan) as plan.json in the same folder.

    The saved module is loaded back and run on `example` against `model`. All files are written to temp
    names first and moved into place only after that check, so a failure leaves no new file behind.
    Raises UsageError for a plan that is not JSON-able, ExportValidationError on a mismatch.
    """
    import torch

    from catalyst_deploy.exporters.onnx import eval_mode, run_torch

    plan_text = _plan_json(plan)
    paths = torch_artifact_paths(path)
    with ExitStack() as stack, eval_mode(model):
        tmp = {key: stack.enter_context(atomic_path(p)) for key, p in paths.items() if key != "plan" or plan_text}
        torch_save_file(model, tmp["module"], paths["module"])
        torch_save_file(model.state_dict(), tmp["state_dict"], paths["state_dict"])
        if plan_text:
            tmp["plan"].write_text(plan_text)
        reloaded = torch.load(tmp["module"], weights_only=False, map_location=example.device)  # our own file
        return check_outputs("torch", run_torch(model, example), run_torch(reloaded.eval(), example), atol)


def check_torch_file(model, path: str | Path, example, atol: float = 1e-6) -> OutputCheck:
    """An existing whole-module file against `model` on `example` (the format table's validator); the file
    is read through the safe loader."""
    from catalyst_deploy.exporters.onnx import run_torch
    from catalyst_deploy.inputs.models import load_model

    saved = load_model(str(path))
    return check_outputs("torch", run_torch(model.eval(), example), run_torch(saved, example), atol)


def _plan_json(plan: dict | None) -> str | None:
    if plan is None:
        return None
    try:
        return json.dumps(plan, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as err:
        raise UsageError(f"the surgery plan cannot be written as JSON: {err}") from err
