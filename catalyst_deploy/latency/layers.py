"""Latency-aware pruning inputs measured on ONNX Runtime CPU: per-conv latency in context, and the
latency per MAC of each channel group (which `allocation.latency_weighted` turns into a priority).

Why: latency is not proportional to MACs. ONNX Runtime's CPU convolutions run in a blocked channel
layout (NCHWc: 16 channels per block with AVX-512, 8 with AVX2), and high-resolution, depthwise-heavy
layers cost more time per MAC than deep 1x1/3x3 ones (benchmarks/RESULTS.md, latency section). So: round
channel counts to the block (`bench.environment.channel_multiple`) and take channels first where a MAC costs
the most time.

    layer_ms = profile_conv_latency(model, example, threads=2)        # ms per conv, in the real graph
    per_mac = group_latency_per_mac(graph, layer_macs(model, example), layer_ms)
    weight = group_weights(per_mac, alpha=2.0)                        # -> allocation.Budget(group_weight=...)

Timings come from ONNX Runtime's own profiler on the whole exported model, so each conv is timed with its
real neighbours (layout reorders, fused activations), not alone: timing convs one by one mispredicted
the whole model (its allocation measured slower than uniform pruning).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass



@dataclass(frozen=True)
class ConvShape:
    """A Conv2d as it runs: channels, kernel, groups, input and output height/width (to match ORT's profile)."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    groups: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]


def conv_shapes(model, example) -> dict[str, ConvShape]:
    """Every Conv2d of `model` by module name, with the sizes it sees on `example`."""
    import torch
    from torch import nn

    shapes: dict[str, ConvShape] = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = ConvShape(module.in_channels, module.out_channels, tuple(module.kernel_size), module.groups,
                                     tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def profile_conv_latency(model, example, threads: int | None = None, batch: int = 1, runs: int = 20) -> dict[str, float]:
    """Median kernel time (ms) of every Conv2d of `model` inside the whole model on ONNX Runtime CPU.

    The model is exported, run `runs` times with ORT's profiler on, and each profiled Conv node is matched
    to its module by shape (channels, kernel, groups, input and output size; layers of one shape share a
    time). Convs that cannot be matched are left out of the result.
    """
    node_ms = _profiled_conv_times(model, example.repeat(batch, *([1] * (example.dim() - 1))), threads, runs)
    layer_ms = {}
    for name, shape in conv_shapes(model, example).items():
        # ORT pads channels to its NCHWc block in the profiled shapes (24 -> 32), the input side only when
        # the input is blocked too (not for a first conv on 3 channels): try exact, then padded
        candidates = (_key(shape, b_in, b_out) for b_in in (1, 8, 16) for b_out in (1, 8, 16))
        key = next((k for k in candidates if k in node_ms), None)
        if key is not None:
            layer_ms[name] = node_ms[key]
    return layer_ms


def group_latency_per_mac(graph, layer_macs: dict[str, int], layer_ms: dict[str, float]):
    """Milliseconds per MAC of each channel group of `graph` (a graph.ChannelGraph): the summed time of the
    convs whose channels the group sets, over their summed MACs (`macs.layer_macs`). Groups with no timed
    conv get the median, so they are neither favoured nor spared."""
    import torch

    values = []
    for g in range(len(graph.sizes)):
        names = [n for n in graph.layers_of_group(g) if n in layer_macs and n in layer_ms]
        macs = sum(layer_macs[n] for n in names)
        values.append(sum(layer_ms[n] for n in names) / macs if macs else float("nan"))
    per_mac = torch.tensor(values, dtype=torch.float64)
    known = per_mac[~per_mac.isnan()]
    return torch.where(per_mac.isnan(), known.median() if len(known) else torch.tensor(1.0, dtype=torch.float64), per_mac)


def group_weights(per_mac, alpha: float = 2.0):
    """(ms per MAC / median) ** alpha per group: the `allocation.Budget.group_weight` of latency-aware
    pruning (alpha 0: uniform; alpha 2 measured best on ResNet-18 / MobileNetV2, benchmarks/RESULTS.md)."""
    return ((per_mac / per_mac.median()).clamp(min=1e-3) ** alpha).float()


def _profiled_conv_times(model, x, threads: int | None, runs: int) -> dict[tuple, float]:
    """Median ms per Conv-node shape key from ONNX Runtime's profiler."""
    import io
    import json
    import os
    import tempfile
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    from catalyst_deploy.formats import DEFAULT_OPSET

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: fast, and this in-memory file is only profiled, never shipped
        torch.onnx.export(model.eval(), (x,), buffer, dynamo=False, opset_version=DEFAULT_OPSET, input_names=["input"])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="catalyst-deploy-profile-") as workdir:  # removed however this ends
        options.profile_file_prefix = os.path.join(workdir, "ort")
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        feeds = {"input": x.cpu().numpy()}
        for _ in range(runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times = collections.defaultdict(list)
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and args.get("op_name") == "Conv":
            times[_event_key(args)].append(event["dur"] / 1e3)
    return {key: float(np.median(ms)) for key, ms in times.items()}


def _event_key(args: dict) -> tuple:
    """Shape key of a profiled Conv node: its input, weight and output shapes (logical NCHW)."""
    x, w = (next(iter(t.values())) for t in args["input_type_shape"][:2])
    y = next(iter(args["output_type_shape"][0].values()))
    return (x[1], w[0], (w[2], w[3]), x[1] // w[1], (x[2], x[3]), (y[2], y[3]))


def _key(shape: ConvShape, in_block: int = 1, out_block: int = 1) -> tuple:
    """Shape key with input / output channel counts padded up to their blocks (depthwise: groups too)."""
    def pad(channels: int, block: int) -> int:
        return -(-channels // block) * block

    depthwise = shape.groups == shape.in_channels == shape.out_channels > 1
    groups = pad(shape.groups, in_block) if depthwise else shape.groups
    return (pad(shape.in_channels, in_block), pad(shape.out_channels, out_block), shape.kernel, groups,
            shape.in_size, shape.out_size)


