"""What a prune run leaves in its folder, all written atomically and recorded in the run's marker:

    pruned.pt          the pruned model (whole module; loads with the safe allowlist)
    pruned_state.pt    its state dict, and plan.json: rebuild without pickle (plan.rebuild_pruned)
    model.json         what the model expects: input shape, channels, normalisation, classes, MACs,
                       source model, method and target (export and bench read it: no --input-shape needed)
    report.json / .md  the typed report and its human rendering
    bifurcation.png    the split of log c at the decision, when the method reports one (Catalyst)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MODEL_META = "model.json"


def model_meta(report, info) -> dict:
    """The description of the pruned model that travels with it (and into ONNX metadata)."""
    return {"input_shape": report.input_shape, "channels": info.channels, "channel_order": "RGB" if info.channels == 3
            else "gray", "image_size": list(info.image_size), "mean": list(info.mean), "std": list(info.std),
            "num_classes": info.num_classes, "source_model": report.config["model"], "method": report.config["method"],
            "target_flops": report.config["target_flops"], "macs": report.macs.pruned, "macs_dense": report.macs.dense}


def write_outputs(s, plan: dict, report, folder, info) -> None:
    from catalyst_deploy.surgery.plan import save_plan
    from catalyst_deploy.render.plots import bifurcation_png

    model = s.model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    folder.write_with("pruned.pt", lambda tmp: torch.save(model, tmp))
    folder.write_with("pruned_state.pt", lambda tmp: torch.save(model.state_dict(), tmp))
    folder.write_with("plan.json", lambda tmp: save_plan(plan, tmp))
    folder.write_text(MODEL_META, json.dumps(model_meta(report, info), indent=1))
    log_c = (report.method or {}).get("log_c_at_freeze")
    if log_c:
        folder.write_with("bifurcation.png", lambda tmp: bifurcation_png(log_c, report.channels["pruned"], tmp))


def write_report(report, folder) -> None:
    from catalyst_deploy.render.prune import markdown

    folder.write_text("report.json", report.to_json())
    folder.write_text("report.md", markdown(report))


def read_model_meta(path: str | Path) -> dict | None:
    """model.json beside a model file (or in a run folder), or None."""
    path = Path(path)
    meta = path / MODEL_META if path.is_dir() else path.with_name(MODEL_META)
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
