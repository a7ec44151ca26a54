"""Latency percentiles and throughput summaries of one benchmark cell."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default).

    An empty sample has no percentile: NaN, so that a cell where nothing completed cannot pass a target.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class CellStats:
    """What one (server, endpoint, concurrency) cell achieved inside its measured window."""

    requests: int
    texts: int
    errors: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.duration_s if self.duration_s > 0 else 0.0


def summarize(latencies_s: Sequence[float], texts: int, errors: int, duration_s: float) -> CellStats:
    """`latencies_s` of the successful requests; `texts` they carried; `errors` the failed requests."""
    ms = [value * 1e3 for value in latencies_s]
    return CellStats(
        requests=len(ms),
        texts=texts,
        errors=errors,
        duration_s=duration_s,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
    )
