"""Latency benchmarks: how each backend of the backend table (`formats.BACKENDS`: ONNX Runtime CPU/CUDA/
TensorRT, native TensorRT, PyTorch) loads and runs a model, dense and pruned timed interleaved, statistics,
bench.json, and the machine they run on (`environment`: versions, CPU flags, kernel channel blocks).

May import the layers below it (docs/architecture.md): `exporters`, `surgery`, `inputs`, `render`, the
settings layer, `errors`, `atomic`. Never `methods`, `latency`, `run`, `api` or `cli`. Importing this package
is cheap; torch and the runtimes are imported when a benchmark runs.
"""
