"""The `zoo` section of benchmarks/RESULTS.md from benchmarks/zoo.json's records (benchmarks/zoo.py)."""

from __future__ import annotations

from collections import Counter

FIVE = ("torchvision:vit_b_16", "torchvision:swin_t", "timm:deit_tiny_patch16_224", "timm:vit_small_patch16_224",
        "timm:convnext_tiny")


def zoo_section(records: dict[str, dict], meta: dict, specs: list[str] | None = None) -> str:
    """The RESULTS.md section; `specs`: every model the table covers, so that one still to run is counted."""
    lines = ["## Coverage of the torchvision and timm zoos (`benchmarks/zoo.py`)", "",
             f"Machine: {meta['machine']}; commit {meta['commit']}. Every model at random initialisation, "
             "`catalyst-deploy check MODEL --target-flops 0.5 --bench` in a process of its own at nice 10 on one "
             "thread (torch seeded with 0): the cut takes first the channels whose producer parameters have the "
             "smallest root-mean-square, so heads and MLP units compete (--round-to 8, --max-layer-ratio 0.9; "
             "an attention head is one unit), the cut and the dense model are exported to ONNX with a dynamic "
             "batch and checked at batch 1 and 3 (relative parity: max |ORT - PyTorch| / max |PyTorch|, "
             "limit 1e-4), and ONNX Runtime CPU times them interleaved at **batch 1 only** (p50, at least "
             f"{meta['settings']['min_time_s']} s and 10 runs each, one thread): the whole table is ~100 models "
             "on a shared 2-core machine. Latency ratios under other engineers' load are noisy.", ""]
    lines += _summary(records, specs) + _findings(records) + [""] + _five(records) + [""] + _table(records)
    return "\n".join(lines)


def _summary(records: dict[str, dict], specs: list[str] | None) -> list[str]:
    out = []
    for zoo in ("torchvision", "timm"):
        mine = [r for r in records.values() if r["model"].startswith(zoo + ":")]
        ok = sum(r["status"] == "ok" for r in mine)
        total = len([s for s in specs if s.startswith(zoo + ":")]) if specs else len(mine)
        if mine and total > len(mine):
            out.append(f"- **{zoo}**: {len(mine)} of its {total} models measured so far, {ok} of them ok; "
                       f"**{total - len(mine)} not run yet** (the table is incomplete: rerun `benchmarks/zoo.py`, "
                       "it resumes).")
        elif mine:
            out.append(f"- **{zoo}**: {ok} of {len(mine)} ok ({100 * ok / len(mine):.1f}%).")
    reasons = Counter(_reason_kind(r["reason"]) for r in records.values() if r["status"] != "ok")
    for reason, count in reasons.most_common():
        out.append(f"- failed, {count}x: {reason}")
    return out


# What a failure was found to be, where it was looked into (each measured as written).
FINDINGS = {
    "timm:efficientnetv2_rw_s": "the dense model at random initialisation outputs up to 3.4e3 (its BatchNorms' "
    "running statistics are the defaults, so nothing normalises); the ONNX exports then differ from PyTorch by "
    "318 (dynamo) and 8.3 (TorchScript), beyond the relative 1e-4. With the BatchNorm statistics set by three "
    "forward passes in train mode on random inputs, as any trained model has them, the outputs stay below 0.3 and "
    "the export matches to 1.3e-7: the failure is the random model's conditioning, not the cut or the exporter.",
    "torchvision:vit_h_14": "its weights (2.35 GiB) exceed what one ONNX file holds (2 GiB) and the exporter "
    "writes no external data: `check --bench` (what this table runs) and `prune --export onnx` refuse it before "
    "any work, with that reason.",
    "torchvision:regnet_y_128gf": "its weights (2.40 GiB) exceed what one ONNX file holds (2 GiB) and the exporter "
    "writes no external data: `check --bench` (what this table runs) and `prune --export onnx` refuse it before "
    "any work, with that reason.",
}


def _findings(records: dict[str, dict]) -> list[str]:
    found = [f"- `{model}`: {text}" for model, text in FINDINGS.items()
             if model in records and records[model]["status"] != "ok"]
    return ["", "### The failures, looked into", "", *found] if found else []


def _reason_kind(reason: str | None) -> str:
    """A failure reason without its model-specific numbers, so that alike failures count together."""
    text = (reason or "unknown").split(": max abs diff")[0]
    return text[:160]


def _five(records: dict[str, dict]) -> list[str]:
    out = ["### The issue's five transformers", "",
           "| model | MACs ratio | parity batch 1 / 3 (cut) | ORT CPU ms dense / cut | latency ratio | status |",
           "|---|---|---|---|---|---|"]
    for spec in FIVE:
        r = records.get(spec)
        if r is None:
            out.append(f"| {spec} | not run yet | | | | |")
            continue
        out.append(f"| {spec} | {_num(r.get('macs_ratio'))} | {_parity(r)} | {_num(r.get('latency_dense_ms'))} / "
                   f"{_num(r.get('latency_pruned_ms'))} | {_num(r.get('latency_ratio'))} | {r['status']} |")
    return out


def _table(records: dict[str, dict]) -> list[str]:
    out = ["### Every model", "",
           "| model | status | groups | heads cut | MACs ratio | parity (cut) | latency ratio | dense ms | s | reason |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records.values(), key=lambda r: r["model"]):
        groups = ", ".join(f"{n} {kind}" for kind, n in (r.get("groups") or {}).items())
        out.append(f"| {r['model']} | {r['status']} | {groups} | {r.get('heads_removed') or ''} | "
                   f"{_num(r.get('macs_ratio'))} | {_parity(r)} | {_num(r.get('latency_ratio'))} | "
                   f"{_num(r.get('latency_dense_ms'))} | {r['seconds']:g} | {(r.get('reason') or '')[:120]} |")
    return out


def _parity(r: dict) -> str:
    parity = (r.get("parity") or {}).get("cut")
    return " / ".join(f"{parity[b]:.1e}" for b in ("1", "3")) if parity else ""


def _num(value) -> str:
    return "" if value is None else f"{value:.3g}"
