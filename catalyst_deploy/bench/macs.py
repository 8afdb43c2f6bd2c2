"""Multiply-accumulates of a benchmarked model, for the FLOPs ratio drawn as the latency ideal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from catalyst_deploy.bench.artifacts import ModelArtifact


def macs_ratio(pruned: ModelArtifact, baseline: ModelArtifact, sample_shape: Sequence[int]) -> float | None:
    """pruned MACs / baseline MACs, when both are counted the same way (two modules or two ONNX files);
    None otherwise or when counting fails (the ratio is only decoration for the report)."""
    if pruned.kind() != baseline.kind() or pruned.kind() == "engine":
        return None
    try:
        dense = artifact_macs(baseline, sample_shape)
        return artifact_macs(pruned, sample_shape) / dense if dense else None
    except Exception:  # an odd graph must not fail a benchmark over its decoration
        return None


def artifact_macs(artifact: ModelArtifact, sample_shape: Sequence[int]) -> int:
    """Per-image MACs: `catalyst_deploy.surgery.macs.count_macs` for modules, Conv/Gemm/MatMul MACs for ONNX files."""
    if artifact.module is not None:
        from catalyst_deploy.exporters.validation import random_input
        from catalyst_deploy.surgery.macs import count_macs as count_module_macs

        device = next(artifact.module.parameters()).device
        return count_module_macs(artifact.module, random_input((1, *sample_shape)).to(device))[0]
    return onnx_macs(artifact.onnx_path)


def onnx_macs(onnx_path) -> int:
    """Per-image MACs of the Conv, Gemm and MatMul nodes whose weights are initializers (ONNX shape
    inference gives the output sizes; the batch axis is left out)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path))).graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
              for info in [*graph.value_info, *graph.output]}
    total = 0
    for node in graph.node:
        weight, out = weights.get(node.input[1]) if len(node.input) > 1 else None, shapes.get(node.output[0])
        if weight is None or not out:
            continue
        per_sample_out = math.prod(out[1:])
        if node.op_type == "Conv":
            total += per_sample_out * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            total += per_sample_out * (weight[1] if trans_b else weight[0])
        elif node.op_type == "MatMul":
            total += per_sample_out * weight[0]
    return total
