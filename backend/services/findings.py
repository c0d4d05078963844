"""A finding of ``pik overview`` and what findings share: its kind, the next command, how a lag or a
histogram percentile reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from backend.ports import LAG_BUCKETS_MS, HourRollup
from backend.times import human_ms

duration = human_ms  # how a lag reads in a summary


class FindingKind(StrEnum):
    MISSING_DAY = "missing_day"
    LATE_DAY = "late_day"
    LAG_SPIKE = "lag_spike"
    DUPLICATE_STORM = "duplicate_storm"
    REJECTION_SPIKE = "rejection_spike"
    CLOCK_SKEW = "clock_skew"
    AGGREGATE_CHURN = "aggregate_churn"


class Finding(BaseModel):
    """One incident: what, where (source/type or entity, day, hour when it is one), how bad, why, and
    the command to run next."""

    kind: FindingKind
    severity: float  # 0-100
    source: str | None = None
    event_type: str | None = None
    entity_id: str | None = None
    day: str
    hour: int | None = None
    metric: str | None = None
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    next: str


def lag_percentile(buckets: Sequence[int], max_lag_ms: int, pct: float) -> int | None:
    """The ``pct`` percentile of a lag histogram (:data:`backend.ports.LAG_BUCKETS_MS`) as an upper bound:
    the bound of the bucket that holds it, or the largest lag when that is smaller. None when empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, -(-total * pct // 100))
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            bound = LAG_BUCKETS_MS[i] if i < len(LAG_BUCKETS_MS) else max_lag_ms
            return min(bound, max_lag_ms)
    return max_lag_ms


class Commands:
    """The next ``pik`` command of a finding, with the options that reach the same backend appended."""

    def __init__(self, context: Sequence[str] = ()) -> None:
        self.context = list(context)

    def __call__(self, *args: str) -> str:
        return shlex.join(["pik", *args, *self.context])


def days_between(first_day: str, end_day: str) -> list[str]:
    """Every day of ``[first_day, end_day)``."""
    d, end = date.fromisoformat(first_day), date.fromisoformat(end_day)
    out = []
    while d < end:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def slow_events(hour: HourRollup, at_least_ms: int) -> int:
    """The accepted events of ``hour`` whose lag bucket lies wholly at ``at_least_ms`` or more."""
    lows = (0, *LAG_BUCKETS_MS)
    return sum(n for low, n in zip(lows, hour.lag_buckets, strict=True) if low >= at_least_ms)


def duration_option(ms: int) -> str:
    """``ms`` as a ``--grace`` value the command line reads back exactly: 1h, 90m, 30s, 250ms."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
