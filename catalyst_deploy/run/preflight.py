"""Everything a prune run can check before it trains, so that a mistake costs seconds, not hours.

- every `--export` format and the `--latency-aware` backend can run on this machine, and every setting of
  the export and the benchmark is valid;
- the model runs forward on the example input, and one batch of each split goes through it;
- the FLOPs target is reachable under --round-to / --max-layer-ratio / --ignore (the reachable minimum
  is named), and it removes something;
- the method can rank every channel group (slimming needs a BatchNorm in each);
- a dense model exported for --bench fits in one ONNX file (2 GiB).
"""

from __future__ import annotations

from catalyst_deploy.errors import MissingDependency, UsageError


def check_deployment(cfg) -> None:
    """Export formats and benchmark backends asked for are usable here (MissingDependency otherwise)."""
    from catalyst_deploy.bench.backends import unavailable_reason
    from catalyst_deploy.exporters import exporter_unavailable_reason

    for fmt in cfg.export.formats:
        reason = exporter_unavailable_reason(fmt)
        if reason:
            raise MissingDependency(f"--export {fmt} cannot run here: {reason}")
    if cfg.latency_aware:
        reason = unavailable_reason(cfg.latency_aware)
        if reason:
            raise MissingDependency(f"--latency-aware {cfg.latency_aware} cannot run here: {reason}")
    check_deploy_settings(cfg)


def check_deploy_settings(cfg) -> None:
    """Every setting the steps after training use (export options per format, the opset, the benchmark's
    batches, times and threads), checked now: a bad one must not cost a training run (UsageError)."""
    import dataclasses

    from catalyst_deploy.run.deploy import bench_options, export_options

    formats = list(cfg.export.formats) or (["onnx"] if cfg.bench.enabled else [])
    for fmt in formats:
        export_options(dataclasses.asdict(cfg.export), fmt)
    opset, most = cfg.export.opset, _max_onnx_opset()
    if opset is not None and most is not None and opset > most:
        raise UsageError(f"setting export.opset {opset} is newer than this PyTorch can export (at most {most}): "
                         "lower it")
    if cfg.bench.enabled:
        bench_options(cfg, ("ort-cpu",), None)


def _max_onnx_opset() -> int | None:
    """The newest ONNX opset the installed PyTorch exports, when it says."""
    try:
        from torch.onnx import _constants
    except ImportError:
        return None
    return getattr(_constants, "ONNX_MAX_OPSET", None)


def check_forward(model, example, what: str) -> None:
    """UsageError when `model` fails on `example` (wrong channel count, too small an image...)."""
    import torch

    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as err:  # any failure of the user's model on this input
        shape = ",".join(map(str, example.shape))
        raise UsageError(f"the model does not run on {what} {shape}: {_first_line(err)} "
                         "(check --input-shape, or the data's channels and size)") from None
    finally:
        model.train(was_training)


def check_data(model, loaders, device) -> None:
    """One batch of every loader through the model (reads, decodes and transforms real samples)."""
    import torch

    for name, loader in loaders.items():
        if loader is None:
            continue
        try:
            x, _ = next(iter(loader))
        except StopIteration:
            raise UsageError(f"the {name} split is empty") from None
        check_forward(model, x[:2].to(device), f"a {name} batch of shape")
        del x
    torch.set_grad_enabled(True)


def check_target(cfg, budget, dense_macs: int) -> None:
    """UsageError when the target asks for nothing or for more than the limits allow."""
    if not budget.sizes:
        raise UsageError(f"no channel group of {cfg.model} can be cut: `catalyst-deploy check {cfg.model}` lists the "
                         "layers left alone and why; --ignore fewer layers")
    target = budget.target_macs
    if target >= dense_macs:
        raise UsageError(f"--target-flops {cfg.target_flops} allows {target / 1e6:.4g}M MACs, and the model has only "
                         f"{dense_macs / 1e6:.4g}M: nothing would be pruned; give a share such as 0.5 or a smaller "
                         "budget")
    least = budget.largest_cut_macs()
    if least > target:
        raise UsageError(f"--target-flops {cfg.target_flops} cannot be reached: the most these limits allow is "
                         f"{least / dense_macs:.3f} of the dense MACs ({least / 1e6:.4g}M) with --round-to "
                         f"{cfg.round_to} and --max-layer-ratio {cfg.max_layer_ratio}; raise the target or "
                         "relax the limits")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def check_onnx_fits(cfg, model) -> None:
    """With --export onnx and --bench the dense model is exported too: refuse one that no ONNX file can hold
    (2 GiB) before training, not after."""
    if "onnx" in cfg.export.formats and cfg.bench.enabled:
        from catalyst_deploy.exporters.onnx import check_onnx_size

        check_onnx_size(model)


def check_method(cfg, graph) -> None:
    """UsageError when the method cannot rank every channel group of the model (before any training)."""
    from catalyst_deploy.methods import method_class

    reason = method_class(cfg.method).cannot_rank(graph)
    if reason:
        raise UsageError(reason)

