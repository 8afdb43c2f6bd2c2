"""Latency as a target: the MACs-share search behind `--target-latency` (`target`) and per-layer latency
profiles for `--latency-aware` (`layers`). The loop that prunes to a searched share and checks the shipped
files drives a prune run, so it lives in the run (`run/latency_loop.py`).

May import: `methods`, `bench`, `exporters`, `surgery`, `inputs`, `render`, the settings layer, `errors`,
`atomic` (the layers below it, docs/architecture.md). Never `run`, `api` or `cli`.
"""
