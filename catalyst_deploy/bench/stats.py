"""Latency statistics of one (backend, model, batch) cell, computed from measured run times."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles, mean and spread of per-call latency in milliseconds, for `batch` images per call.

    Throughput (images/s) is `batch / p50`: the median, like the pruned/dense ratios, because on a shared
    machine the mean is dragged by the occasional preempted run while the median is not.
    """

    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float], batch: int) -> LatencyStats:
        """Statistics of per-call run times given in seconds; ValueError when there are none."""
        import numpy as np

        if len(seconds) == 0:
            raise ValueError("no timed runs")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
        return cls(batch, len(ms), float(p50), float(p90), float(p99), float(ms.mean()), std, float(ms.min()))

    @property
    def throughput_ips(self) -> float:
        """Images per second at the median latency."""
        return self.batch / (self.p50_ms / 1e3)

    def to_dict(self) -> dict:
        return {"runs": self.runs, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "mean_ms": self.mean_ms, "std_ms": self.std_ms, "min_ms": self.min_ms,
                "throughput_ips": self.throughput_ips}
