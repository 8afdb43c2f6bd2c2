"""Latency as a target: the MACs-share search behind `--target-latency` (`target`), the loop that
prunes to it and checks the shipped files (`loop`), and per-layer latency profiles for
`--latency-aware` (`layers`).

May import: `surgery`, `exporters`, `bench`, `methods`, the settings layer, `errors`; `loop` also drives
`run` (it is the one module here that sits above the run, and only `api` imports it).
"""
