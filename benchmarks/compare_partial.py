"""The selection stage of compare.py as far as it has run, and the long budget's runs so far: every cached run
of the 1+1 budget (and of 8+4) on seed 0's dense model, per method and candidate setting, with the accuracy through the phases on both splits. For a grid that
is still running (the paper's Catalyst, whose runs take 7-15 minutes each on a loaded 2-core machine), this
is what the validation split says so far; `compare.py select` makes the choice once every candidate has run.

    python benchmarks/compare_partial.py --cache benchmarks/compare_records   # the committed records behind RESULTS.md
    python benchmarks/compare_partial.py --cache /work/cache          # a lane's live cache; writes the section
    python benchmarks/compare_partial.py --cache /work/cache --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine_line, publish  # noqa: E402 (benchmarks/results_file.py)

SECTION = "compare-paper-form"
ORDER = ("catalyst", "catalyst-gated", "depgraph", "l1", "group-lasso", "slimming", "taylor", "random")


def records(cache: Path, budget: str = "1+1", seed: int = 0) -> list[dict]:
    out = []
    for path in sorted((cache / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("budget") == budget and rec.get("seed") == seed and not rec.get("error"):
            out.append(rec)
    return out


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def section(recs: list[dict], long_recs: list[dict] | None = None) -> str:
    lines = ["## The paper's Catalyst at the selection budget (`benchmarks/compare_partial.py`)", "",
             f"Machine: {machine_line()} (the runs: single-thread lanes beside other work, load 3-6). Seed 0's dense "
             "small ResNet 32-64-128 (92.17% test), full Fashion-MNIST with 5,000 training images held out as the "
             "validation split, the 1+1 epoch budget of `benchmarks/compare.py`, every method at the same optimizer "
             "steps. Accuracy in %: test after the method's phase, with a forced set zeroed (Catalyst), right after "
             "the cut and final; validation final (the selection criterion). Commits: "
             + ", ".join(sorted({r.get("commit", "?") for r in recs})) + ".", "",
             "| method | setting | target | dense | after phase | forced set zeroed | after cut | final (test) | final (val) | "
             "forced to zero / margin log10 |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += rows(recs)
    if long_recs:
        lines += ["", "### The long budget so far (8+4 epochs, seed 0, settings chosen at 1+1; the one-shot methods cut at "
                  "once and recover for all 12 epochs). Dense 91.68%: the narrow model 16-32-64 of compare.py's long "
                  "budget; dense 92.17%: the wide one, the earlier yardstick runs that moved the long budget to the "
                  "narrow model", "",
                  *lines[4:6], *rows(long_recs)]
    return "\n".join(lines)


def rows(recs: list[dict]) -> list[str]:
    lines = []
    recs = sorted(recs, key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else 99,
                                       json.dumps(r["setting"], sort_keys=True), -r["target"]))
    for r in recs:
        cat = r.get("catalyst") or {}
        forced = f"{cat.get('forced_to_zero')} / {fmt(cat.get('margin_log10'))}" if cat else "-"
        lines.append(f"| {r['method']} | `{json.dumps(r['setting'])}` | {r['target']:g} | {fmt(r['acc_dense'])} | {fmt(r['acc_after_reg'])} | "
                     f"{fmt(r.get('acc_after_decision'))} | {fmt(r['acc_after_cut'])} | {fmt(r['acc_final'])} | "
                     f"{fmt(r['val_final'])} | {forced} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    recs = records(args.cache)
    if not recs:
        raise SystemExit(f"no cached 1+1 runs of seed 0 in {args.cache}: run `compare.py select` first")
    publish(SECTION, section(recs, records(args.cache, "8+4")), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
