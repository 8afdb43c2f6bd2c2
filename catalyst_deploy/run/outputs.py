"""What a prune run leaves in its folder, all written atomically and recorded in the run's marker (the model's
four files first: once they are written no failure removes them):

    pruned.pt          the pruned model (whole module; loads with the safe allowlist)
    pruned_state.pt    its state dict, and plan.json: rebuild without pickle (plan.rebuild_pruned)
    model.json         what the model expects: input shape, channels, normalisation, classes, MACs,
                       source model, method and target (export and bench read it: no --input-shape needed)
    report.json / .md  the typed report and its human rendering
    bifurcation.png    the split of log c at the decision, when the method reports one (Catalyst)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from catalyst_deploy.errors import UsageError

MODEL_META = "model.json"
MODEL_FILES = ("pruned.pt", "pruned_state.pt", "plan.json", MODEL_META)  # written first, never removed by a failure
MAX_META_BYTES = 1 << 20
MAX_INPUT_VALUES = 1 << 28  # values in one example input (e.g. 1,3,8192,8192 is 2e8)
MAX_CLASSES = 1 << 20


def model_meta(report, info) -> dict:
    """The description of the pruned model that travels with it (and into ONNX metadata)."""
    return {"input_shape": report.input_shape, "channels": info.channels, "channel_order": "RGB" if info.channels == 3
            else "gray", "image_size": list(info.image_size), "mean": list(info.mean), "std": list(info.std),
            "num_classes": info.num_classes, "source_model": report.config["model"], "method": report.config["method"],
            "target_flops": report.config["target_flops"], "macs": report.macs.pruned, "macs_dense": report.macs.dense}


def write_outputs(s, plan: dict, report, folder, info) -> None:
    """The trained model's files (MODEL_FILES), each atomic; once they are written, the files of a run this
    one replaces (--overwrite) that it did not rewrite go."""
    from catalyst_deploy.atomic import torch_save_file
    from catalyst_deploy.surgery.plan import save_plan

    model = s.model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    for name, obj in (("pruned.pt", model), ("pruned_state.pt", model.state_dict())):
        folder.write_with(name, lambda tmp: torch_save_file(obj, tmp, folder.file(name)))  # noqa: B023 (called at once)
    folder.write_with("plan.json", lambda tmp: save_plan(plan, tmp))
    folder.write_text(MODEL_META, json.dumps(model_meta(report, info), indent=1))
    folder.drop_previous()


def write_plot(report, folder) -> None:
    """bifurcation.png: the method's split at its decision, when it records one (Catalyst)."""
    from catalyst_deploy.render.plots import bifurcation_png

    log_c = (report.method or {}).get("log_c_at_freeze")
    if log_c:
        folder.write_with("bifurcation.png", lambda tmp: bifurcation_png(log_c, report.channels["pruned"], tmp))


def write_report(report, folder) -> None:
    from catalyst_deploy.render.prune import markdown

    folder.write_text("report.json", report.to_json())
    folder.write_text("report.md", markdown(report))


def read_model_meta(path: str | Path) -> dict | None:
    """model.json beside a model file (or in a run folder), checked as data, or None when there is none.

    Its values are only ever data: a shape, counts, names shown in reports. Raises UsageError when the file
    is too big, not JSON, or its input shape, channels or classes are not sensible positive integers.
    """
    path = Path(path)
    meta_path = path / MODEL_META if path.is_dir() else path.with_name(MODEL_META)
    try:
        if not meta_path.is_file():
            return None
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise ValueError("too big")
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise UsageError(f"{meta_path} is not a readable model.json ({_first_line(err)}): remove it, or pass "
                         "--input-shape (and --baseline) yourself") from None
    problem = _meta_problem(meta)
    if problem:
        raise UsageError(f"{meta_path} is not a model.json this tool wrote: {problem}")
    return meta


def _meta_problem(meta) -> str | None:
    """What is wrong with a model.json's values, or None."""
    if not isinstance(meta, dict):
        return "it is not a mapping"
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(_count(v, 1 << 16) for v in shape)
            and math.prod(shape) <= MAX_INPUT_VALUES):
        return "input_shape must be 4 positive integers of a sensible size (N,C,H,W)"
    for key, most in (("channels", 1 << 16), ("num_classes", MAX_CLASSES)):
        if key in meta and not _count(meta[key], most):
            return f"{key} must be a positive integer up to {most}"
    if not isinstance(meta.get("source_model", ""), str):
        return "source_model must be text"
    return None


def _count(value, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def kept_message(folder, failed: str) -> str:
    """The one line of a run that failed after its model was written: what is kept, what failed, and how
    to finish it."""
    kept = [name for name in (*MODEL_FILES, "checkpoints/last.pt") if folder.file(name).is_file()]
    return (f"{failed}; kept in {folder.path}: {', '.join(kept) or 'nothing'} (the trained model); "
            f"finish the run with `catalyst-deploy prune ... --out {folder.path} --resume` (the same command, "
            "plus --resume)")
