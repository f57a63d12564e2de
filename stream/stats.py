"""Latency percentiles shared by the sender and receiver statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable

PERCENTILE_KEYS = ("p50", "p95", "p99", "max")


def percentiles(samples_ms: Iterable[float]) -> dict[str, float | None]:
    """Return p50, p95, p99 and max of ``samples_ms`` (milliseconds), rounded to 3 decimals.

    Uses the nearest-rank definition, so every reported value is an observed sample. With no
    samples every value is ``None``.
    """
    ordered = sorted(samples_ms)
    if not ordered:
        return dict.fromkeys(PERCENTILE_KEYS)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * n) - 1)], 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ordered[-1], 3)}
