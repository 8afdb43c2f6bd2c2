"""One comparison run through `catalyst_deploy.api.prune`, its record, and the cache that lets several lanes
share the work (a record is reused only when every setting it depends on is the same)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import traceback
from datetime import datetime, timezone
from pathlib import Path


def run_key(args, method: str, setting: dict, budget: str, target: float, seed: int, dense) -> str:
    key = {"method": method, "setting": setting, "budget": budget, "target": target, "seed": seed,
           "latency_aware": args.latency_aware, "quick": args.quick, "dense": Path(dense.path).name, "data": args.data}
    text = json.dumps(key, sort_keys=True)
    return f"{method}_{budget}_t{target:g}_s{seed}_" + hashlib.sha256(text.encode()).hexdigest()[:10]


def run_cached(args, method, setting, budget, target, seed, dense, cached_only: bool = False) -> dict:
    """The record of one run: from cache/records when made before with the same settings, else run now."""
    key = run_key(args, method, setting, budget, target, seed, dense)
    path = args.cache / "records" / f"{key}.json"
    if path.is_file():
        return same_dense(json.loads(path.read_text()), dense, key)
    if cached_only:
        raise SystemExit(f"no cached run {key}: run the stage that makes it first")
    print(f"run {key}", flush=True)
    record = run_one(args, method, setting, budget, target, seed, dense, key)
    print(f"  {summary(record)}", flush=True)
    if record.get("error"):  # not cached: the next invocation runs it again (an interrupted lane, a fixed bug)
        if "Interrupted" in record["error"]:
            raise SystemExit(f"{key}: interrupted; its checkpoint is in {args.cache / 'runs' / key}")
        return record
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def dense_digest(dense) -> str:
    return hashlib.sha256(Path(dense.path).read_bytes()).hexdigest()[:16]


def same_dense(record: dict, dense, key: str) -> dict:
    """`record`, if it was made from this dense model. The key names the dense model's file, not its weights: a
    dense model retrained elsewhere (another CPU's round-off over 10 epochs) has the same name and other weights,
    and a record made from the old one must not be mixed with runs from the new one. Records carry the file's
    digest; older ones only the dense accuracy they measured."""
    if "dense_sha256" in record:
        same, what = record["dense_sha256"] == dense_digest(dense), "weights"
    else:
        same, what = record.get("acc_dense") is None or abs(record["acc_dense"] - dense.accuracy) < 0.005, (
            f"accuracy {record.get('acc_dense')} there, {dense.accuracy} here")
    if not same:
        raise SystemExit(f"cached run {key} was made from another {Path(dense.path).name} ({what}): give this dense "
                         "model a cache of its own (--cache DIR), or restore the dense model those records came from")
    return record


def run_one(args, method, setting, budget, target, seed, dense, key) -> dict:
    from catalyst_deploy import api
    from compare import run_config
    from results_file import git_commit

    cfg = dataclasses.replace(run_config(args, method, setting, budget, target, seed, dense.path),
                              out=args.cache / "runs" / key, overwrite=True)
    base = {"key": key, "method": method, "setting": setting, "budget": budget, "target": target, "seed": seed,
            "latency_aware": args.latency_aware, "commit": git_commit(), "dense_sha256": dense_digest(dense),
            "made": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    try:
        report = api.prune(cfg, log=lambda _m: None)
    except Exception as err:  # recorded: one failed run must not lose the others
        traceback.print_exc()
        return {**base, "error": f"{type(err).__name__}: {err}"}
    return {**base, **record_of(report), "latency": latency_ratios(args, dense, cfg.out),
            "rank_corr": rank_correlation(report.channels.get("priority"), dense.ablation(args))}


def record_of(report) -> dict:
    acc, val = report.accuracy, report.val_accuracy or {}
    rec = {"acc_dense": acc["dense"], "acc_after_reg": acc["after_regularization"],
           "acc_after_cut": acc["after_surgery"], "acc_final": acc["final"], "val_final": val.get("final"),
           "acc_after_decision": acc.get("after_decision"),  # a regularizing method's forced set zeroed
           "macs_ratio": round(report.macs.ratio, 4), "params_ratio": round(report.params.ratio, 4),
           "steps": report.steps, "seconds": report.seconds.get("total"), "pruned": report.channels["pruned"]}
    cat = report.method
    if cat and cat.get("split"):
        sp = cat["split"]
        pruned = max(1, report.channels["removed"])
        rec["catalyst"] = {"margin_log10": None if sp["margin"] is None else sp["margin"] / math.log(10),
                           "decided_share": sp["decided_share"], "collapsed_share_of_prune_set":
                           min(1.0, sp["collapsed"] / pruned), "frozen_at": sp["step"], "forced": sp["forced"],
                           "phase_steps": cat["phase_steps"], "forced_to_zero": cat["forced_to_zero"]}
    return rec


def latency_ratios(args, dense, out: Path) -> dict:
    """ONNX Runtime CPU p50 latency, pruned / dense, per batch (both timed in turn in this process)."""
    from catalyst_deploy import api
    from catalyst_deploy.bench.harness import BenchOptions
    from catalyst_deploy.inputs.models import load_model

    options = BenchOptions(backends=("ort-cpu",), batches=(1, 32), input_shape=(1, 28, 28), threads=args.threads,
                           min_time_s=0.3 if args.quick else 1.0, min_runs=10 if args.quick else 30)
    report = api.bench(load_model(str(out / "pruned.pt")), load_model(str(dense.path)), options)
    return {str(b): report.latency_ratio("ort-cpu", b) for b in (1, 32)}


def rank_correlation(priority, ablation) -> float | None:
    """Spearman correlation of a method's prune priority with each channel's single-channel ablation loss
    on the dense model (negative: the method prunes the channels whose removal costs least first)."""
    if not priority or not ablation or len(priority) != len(ablation):
        return None
    rank = lambda xs: {i: r for r, i in enumerate(sorted(range(len(xs)), key=xs.__getitem__))}  # noqa: E731
    ra, rb = rank(priority), rank(ablation)
    n = len(priority)
    mean = (n - 1) / 2
    cov = sum((ra[i] - mean) * (rb[i] - mean) for i in range(n))
    var = sum((r - mean) ** 2 for r in range(n))
    return round(cov / var, 4)


def summary(record: dict) -> str:
    if record.get("error"):
        return f"{record['method']} failed: {record['error']}"
    return (f"{record['method']} {record['budget']} t{record['target']:g} s{record['seed']}: final {record['acc_final']:.2f} "
            f"(val {record['val_final']}), right after the cut {record['acc_after_cut']:.2f}, MACs {record['macs_ratio']:.3f}, "
            f"rank corr {record['rank_corr']}, {record['seconds']:.0f} s")
