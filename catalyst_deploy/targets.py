"""What a prune run aims at, parsed from its settings: a FLOPs target (`--target-flops`: a share of the dense
MACs or an absolute budget) or a latency target (`--target-latency`: a share of the dense latency or a time
per call). Pure parsing, no torch: the settings layer validates both when a config is loaded.

    parse_flops_target("0.5").macs(dense_macs)      # half the dense MACs
    parse_latency_target("3ms@8")                    # 3 ms per call at batch 8
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from catalyst_deploy.errors import UsageError

_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@dataclass(frozen=True)
class FlopsTarget:
    """Either a share of the dense MACs (0 < fraction < 1) or an absolute MAC budget."""

    fraction: float | None = None
    absolute: float | None = None

    def macs(self, dense_macs: int) -> float:
        return self.fraction * dense_macs if self.fraction is not None else float(self.absolute)

    def __str__(self) -> str:
        return f"{self.fraction:g}" if self.fraction is not None else f"{self.absolute / 1e9:g}G MACs"


def parse_flops_target(text: str | float) -> FlopsTarget:
    """'0.5' -> half the dense MACs; '2.0G' / '350M' -> an absolute MAC budget. UsageError otherwise."""
    s = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGT]?)", s, flags=re.IGNORECASE)
    if not m:
        raise UsageError(f"--target-flops {s!r} is not a number: use a share such as 0.5 or a MAC budget such as 2.0G")
    value, unit = float(m.group(1)), m.group(2).upper()
    if unit:
        if value <= 0:
            raise UsageError(f"--target-flops {s!r} must be a positive budget")
        return FlopsTarget(absolute=value * _UNITS[unit])
    if not 0 < value < 1:
        raise UsageError(f"--target-flops {s!r} must be a share strictly between 0 and 1 (e.g. 0.5), "
                         "or an absolute MAC budget with a unit (e.g. 2.0G)")
    return FlopsTarget(fraction=value)


@dataclass(frozen=True)
class LatencyTarget:
    """A share of the dense latency (`ratio`) or an absolute time (`ms`), at a batch size."""

    ratio: float | None = None
    ms: float | None = None
    batch: int = 1

    def as_ratio(self, dense_ms: float) -> float:
        return self.ratio if self.ratio is not None else self.ms / dense_ms

    def __str__(self) -> str:
        return f"{self.ratio:g}x" if self.ratio is not None else f"{self.ms:g}ms@{self.batch}"


def parse_latency_target(text: str) -> LatencyTarget:
    """'0.6x' -> 60% of the dense latency (batch 1); '3ms' / '3ms@8' -> 3 ms per call at batch 1 / 8."""
    s = str(text).strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*x(?:@(\d+))?", s)
    if m:
        ratio = float(m.group(1))
        if not 0 < ratio < 1:
            raise UsageError(f"--target-latency {text!r}: a share of the dense latency must be between 0 and 1, e.g. 0.6x")
        return LatencyTarget(ratio=ratio, batch=int(m.group(2) or 1))
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*ms(?:@(\d+))?", s)
    if m and float(m.group(1)) > 0 and int(m.group(2) or 1) >= 1:
        return LatencyTarget(ms=float(m.group(1)), batch=int(m.group(2) or 1))
    raise UsageError(f"--target-latency {text!r} is not a latency: use a share of the dense latency (0.6x) or a "
                     "time per call (3ms, or 3ms@8 at batch 8)")
