"""`catalyst-deploy check MODEL`: what a model offers to pruning, in seconds, without data or training.

    report = check_model(load_check_config(model="torchvision:resnet50"))
    report.status, report.reason          # "ok" / "failed", and why (one line, with what to do)

It builds the channel graph and reports the groups (kind, size, MACs per channel), the layers left alone
and why, the least MACs the limits allow, and a trial cut at the target: the channels whose producer
parameters have the smallest root-mean-square go first (heads and MLP units compete on equal terms; at
random initialisation this mixes the kinds of group, which is what a check of the cut wants). The cut is exported to ONNX
(dynamic batch) and checked against PyTorch at batch 1 and 3; with `bench`, the dense and cut files are
timed against each other on ONNX Runtime CPU at batch 1. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from catalyst_deploy.errors import CatalystDeployError

PARITY_BATCHES = (1, 3)
PARITY_LIMIT = 1e-4  # largest |ONNX - PyTorch| / max|PyTorch| accepted
CHECK_SCHEMA = "catalyst-deploy/check-report/1"


@dataclass
class CheckReport:
    """What `check` found; `status` "failed" comes with a one-line `reason` that says what to do."""

    model: str
    input_shape: list[int]
    status: str = "ok"
    reason: str | None = None
    macs_dense: int | None = None
    params_dense: int | None = None
    converted: dict = field(default_factory=dict)
    groups: list[dict] = field(default_factory=list)
    left_alone: dict = field(default_factory=dict)
    target: str | None = None
    min_macs_ratio: float | None = None
    cut: dict | None = None
    latency: dict | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def fail(self, reason: str) -> CheckReport:
        self.status, self.reason = "failed", reason
        return self

    def to_dict(self) -> dict:
        return {"schema": CHECK_SCHEMA, **asdict(self)}


def check_model(cfg, log=lambda _message: None) -> CheckReport:
    """Run every check on the model `cfg` (a `config.CheckConfig`) names. UsageError for bad input (a spec,
    a shape the model does not run on); any other failure is the report's `reason`."""
    import torch

    saved_threads = torch.get_num_threads()
    # the checks are many small ops, which a second thread slows down on a busy machine (resnet50: 27 s on one
    # thread, 61 s on two, under a load of 4.5 on 2 cores)
    torch.set_num_threads(cfg.threads or 1)
    try:
        return _checked(cfg, log)
    finally:
        torch.set_num_threads(saved_threads)


def _checked(cfg, log) -> CheckReport:
    report = CheckReport(cfg.model, list(cfg.input_shape), target=str(cfg.target))
    model, example = _load(cfg, report)
    try:
        if cfg.bench:  # the dense file is timed too: refuse a model ONNX cannot hold before the long part
            from catalyst_deploy.exporters.onnx import check_onnx_size

            check_onnx_size(model)
        _check_graph(cfg, model, example, report, log)
    except CatalystDeployError as err:
        report.fail(str(err))
    except Exception as err:  # noqa: BLE001 - the model's own code or a library failed: that is the finding
        report.fail(f"{type(err).__name__}: {_first_line(err)} (report it with `catalyst-deploy env` output)")
    return report


def _load(cfg, report: CheckReport):
    from catalyst_deploy.exporters.validation import random_input
    from catalyst_deploy.inputs.models import load_model
    from catalyst_deploy.run.preflight import check_forward

    import torch

    start = time.perf_counter()
    torch.manual_seed(0)  # a model built at random initialisation gets the same weights, so the same trial cut
    model = load_model(cfg.model, weights=cfg.weights, trust_pickle=cfg.trust_pickle, num_classes=cfg.num_classes)
    example = random_input((1, *cfg.input_shape[1:]))
    check_forward(model, example, "--input-shape")
    if _wake_zero_head(model, example):
        report.notes.append("every output was 0 (an output layer initialised at zero, as torchvision's ViT does): "
                            "the check gave it random weights, so that the ONNX parity compares something")
    report.seconds["load"] = round(time.perf_counter() - start, 2)
    return model, example


def _wake_zero_head(model, example) -> bool:
    """Give a zero output layer random weights when every output is 0; True when it did."""
    import torch

    from catalyst_deploy.exporters.onnx import run_torch
    from catalyst_deploy.surgery.graph import output_layer

    model.eval()
    head = output_layer(model, example)
    if head is None or any(bool(out.any()) for out in run_torch(model, example)) or bool(head.weight.any()):
        return False
    with torch.no_grad():
        torch.nn.init.normal_(head.weight, std=0.02)
    return True


def _check_graph(cfg, model, example, report: CheckReport, log) -> None:
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.surgery.macs import count_macs

    start = time.perf_counter()
    graph = ChannelGraph(model, example, cfg.ignore, prune_embedding=cfg.prune_embedding)
    report.converted, report.left_alone = graph.converted, graph.left_alone
    report.macs_dense, report.params_dense = count_macs(model, example)
    report.groups = group_rows(graph, model, example)
    report.seconds["graph"] = round(time.perf_counter() - start, 2)
    log(f"{len(graph.sizes)} groups, {graph.num_channels} channels; {len(graph.left_alone)} layers left alone")
    if not graph.sizes:
        report.fail("no channel group can be cut: every layer is left alone (see left_alone); --ignore fewer layers, "
                    "or this architecture is not supported yet")
        return
    budget = Budget(tuple(graph.sizes), graph.trial_macs, cfg.target.macs(report.macs_dense), cfg.round_to,
                    cfg.max_layer_ratio, None, tuple(graph.unit_widths))
    report.min_macs_ratio = round(budget.largest_cut_macs() / report.macs_dense, 4)
    if budget.largest_cut_macs() > budget.target_macs:
        report.fail(f"--target-flops {cfg.target_flops} cannot be reached: the most these limits allow is "
                    f"{report.min_macs_ratio:.3f} of the dense MACs; raise the target or relax --round-to / "
                    "--max-layer-ratio / --ignore")
        return
    _trial_cut(cfg, graph, budget, model, example, report, log)


def group_rows(graph, model, example) -> list[dict]:
    """One row per channel group: root layer, kind, size, channels per unit, layers it cuts, MACs per unit."""
    from catalyst_deploy.surgery.attention import attention_macs_by_module
    from catalyst_deploy.surgery.macs import layer_macs

    per_layer = layer_macs(model, example)
    per_attention = attention_macs_by_module(model, example)
    rows = []
    for g in range(len(graph.sizes)):
        plan = graph.plan_for(_one_unit(graph, g))
        saved = sum(per_layer.get(name, 0) * _share_cut(entry) for name, entry in plan["layers"].items())
        heads = graph.heads(g)
        if heads is not None:
            saved += per_attention.get(heads.name, 0) / heads.num_heads
        rows.append({"group": graph.root_name(g), "kind": graph.kind(g), "size": graph.sizes[g],
                     "unit_width": graph.unit_widths[g], "layers": len(plan["layers"]), "macs_per_unit": int(saved)})
    return rows


def _one_unit(graph, g: int):
    import torch

    mask = torch.zeros(graph.num_channels, dtype=torch.bool)
    mask[graph.offsets[g]] = True
    return mask


def _share_cut(entry: dict) -> float:
    """The share of a layer's MACs that a plan entry removes (MACs are linear in the channels cut; a layer cut
    on both sides by one group is depthwise: the same channels)."""
    return max(1 - len(entry[kind]["keep"]) / entry[kind]["size"] for kind in ("out", "in") if kind in entry)


def rms_magnitude(graph):
    """The root-mean-square of each channel's producer parameters: an L2 norm that does not grow with the
    number of parameters, so a head (3 x head_dim rows) and an MLP unit (one row) compete on equal terms."""
    import torch

    from catalyst_deploy.surgery.graph import channel_norms

    slices = graph.producer_slices()
    counts = torch.zeros(graph.num_channels)
    for s in slices:
        counts.index_add_(0, s.chan.cpu(), torch.full((len(s.chan),), s.param.numel() / s.param.shape[s.dim]))
    return channel_norms(slices, graph.num_channels) / counts.clamp(min=1).sqrt()


def _trial_cut(cfg, graph, budget, model, example, report: CheckReport, log) -> None:
    from catalyst_deploy.surgery.macs import count_macs

    start = time.perf_counter()
    mask = budget.select(-rms_magnitude(graph))
    pruned = graph.cut_copy(mask).eval()
    macs, params = count_macs(pruned, example)
    heads = sum(int(mask[graph.offsets[g]:graph.offsets[g + 1]].sum()) for g in range(len(graph.sizes))
                if graph.heads(g) is not None)
    report.cut = {"macs_ratio": round(macs / report.macs_dense, 4), "params_ratio": round(params / report.params_dense, 4),
                  "channels_removed": int(mask.sum()) - heads, "heads_removed": heads}
    report.seconds["cut"] = round(time.perf_counter() - start, 2)
    log(f"trial cut: {report.cut['macs_ratio']:.3f} of the MACs")
    with tempfile.TemporaryDirectory(prefix="catalyst-deploy-check-") as tmp:
        start = time.perf_counter()
        pruned_onnx = _export_checked(pruned, example, Path(tmp) / "cut.onnx", report)
        report.seconds["onnx"] = round(time.perf_counter() - start, 2)
        if cfg.bench and report.status == "ok":
            start = time.perf_counter()
            dense = copy.deepcopy(graph.model).cpu().eval()
            dense_onnx = _export_checked(dense, example, Path(tmp) / "dense.onnx", report, role="dense")
            if report.status == "ok":
                report.latency = time_pair(pruned_onnx, dense_onnx, example, cfg)
            report.seconds["bench"] = round(time.perf_counter() - start, 2)


def _export_checked(model, example, path: Path, report: CheckReport, role: str = "cut") -> Path:
    """Export to ONNX (dynamic batch) and record the relative parity at each of PARITY_BATCHES."""
    from catalyst_deploy.exporters.onnx import torch_to_onnx

    try:
        torch_to_onnx(model, example, path, atol=PARITY_LIMIT)
    except CatalystDeployError as err:
        report.fail(f"ONNX export of the {role} model failed: {err}")
        return path
    parity = onnx_parity(model, path, example)
    report.cut.setdefault("parity", {})[role] = parity
    worst = max(parity.values())
    if not worst <= PARITY_LIMIT:
        report.fail(f"the {role} model's ONNX file differs from PyTorch by {worst:.3g} (relative) > {PARITY_LIMIT:g}")
    return path


def onnx_parity(model, path: Path, example) -> dict[str, float]:
    """{batch: max |ONNX Runtime - PyTorch| / max |PyTorch|} on random inputs of PARITY_BATCHES."""
    import numpy as np

    from catalyst_deploy.exporters.onnx import INPUT_NAME, open_ort_session, run_torch
    from catalyst_deploy.exporters.validation import random_input

    session = open_ort_session(path)
    parity = {}
    for batch in PARITY_BATCHES:
        x = random_input((batch, *example.shape[1:]), seed=batch)
        expected = run_torch(model, x)[0].float().numpy()
        actual = session.run(None, {INPUT_NAME: x.numpy()})[0]
        parity[str(batch)] = float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
    return parity


def time_pair(pruned_onnx: Path, dense_onnx: Path, example, cfg) -> dict:
    """ONNX Runtime CPU latency at batch 1, dense and pruned interleaved (bench.harness)."""
    from catalyst_deploy.bench.harness import BenchOptions, run_benchmark

    options = BenchOptions(backends=("ort-cpu",), batches=(1,), input_shape=tuple(example.shape[1:]),
                           threads=cfg.threads, min_time_s=cfg.bench_min_time_s, min_runs=10)
    bench = run_benchmark(pruned_onnx, dense_onnx, options)
    dense, pruned = bench.cell("ort-cpu", 1, "baseline"), bench.cell("ort-cpu", 1, "pruned")
    if not (dense and pruned and dense.ok and pruned.ok):
        raise CatalystDeployError(f"ONNX Runtime could not time the files: {(pruned or dense).error}")
    return {"backend": "ort-cpu", "batch": 1, "threads": cfg.threads, "dense_ms": round(dense.stats.p50_ms, 4),
            "pruned_ms": round(pruned.stats.p50_ms, 4), "ratio": round(bench.latency_ratio("ort-cpu", 1), 4)}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
