#!/usr/bin/env bash
# Prepared GPU check (one H100/H200, under 8 minutes): fine-tuning throughput with and without Catalyst's
# gates and update, dense vs pruned ResNet-50 latency (torch eager, CUDA graphs, ORT CUDA, TensorRT), a
# `catalyst-deploy prune ... --export onnx,trt --bench` run when tensorrt imports (its latency cells), and
# the GPU/TensorRT tests. Writes $OUT/gpu_check.md, $OUT/gpu_check.json, $OUT/bench/ and $OUT/prune-trt/
# when OUT is set. Arguments go to gpu_check.py (e.g. --parts prune-trt,tests to rerun some parts).
#
#   bash benchmarks/gpu_check.sh                  # from anywhere; PYTHON=/path/to/python to pick one
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
# The script keeps its own 450 s budget (--budget-s); this hard stop is the safety net under 8 minutes.
timeout 470 "$PYTHON" benchmarks/gpu_check.py "$@"
status=$?
[ "$status" -eq 124 ] && echo "gpu_check.py hit the 470 s hard stop"
exit "$status"
