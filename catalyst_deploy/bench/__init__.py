"""Latency benchmarks: backends (ONNX Runtime CPU/CUDA/TensorRT, native TensorRT, PyTorch) behind one
registry, dense and pruned timed interleaved, statistics, and the table / bench.json / plot reports.

Importing this package is cheap; torch and the runtimes are imported when a benchmark runs.
"""
