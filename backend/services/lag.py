"""Lag: how late did the events of one (source, event_type, day) arrive.

Holds :class:`LagService` (read-only over the index ports), its answer :class:`LagReport` with one
:class:`HourLag` per event hour, and :func:`percentile` (nearest rank). A report has percentiles, an hourly
histogram and the largest-lag events (one query on the lag index, largest first). A store that keeps
rollups (``InvestigationIndex.lag_rollup``) gives the counts exactly and the percentiles from its lag buckets
(``percentile_error`` says how far they may be off); otherwise every receipt of the partition is scanned.
"""

from __future__ import annotations

from pydantic import BaseModel

from backend import lag_buckets
from backend.errors import InvalidRequest
from backend.model import EventRecord, IngestStatus
from backend.ports import EventIndex, InvestigationIndex, LagRollup
from backend.times import TimeFormatError, parse_day

# Scans read this many receipts per call.
SCAN_PAGE = 5000


def percentile(sorted_values: list[int], pct: float) -> int | None:
    """Nearest-rank percentile of an ascending list (None when empty): p50 of [1, 2, 3, 4] is 2."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100), at least 1
    return sorted_values[int(rank) - 1]


class HourLag(BaseModel):
    """Accepted events of one event hour: how many, how many late, their median and largest lag."""

    hour: str
    count: int
    late: int
    p50_ms: int | None
    max_ms: int | None


class LagReport(BaseModel):
    """Lag of the accepted events of one (source, event_type, day); percentiles are nearest-rank."""

    source: str
    event_type: str
    day: str
    count: int
    duplicates: int
    clock_skew: int
    late_threshold_ms: int
    late: int
    p50_ms: int | None
    p90_ms: int | None
    p99_ms: int | None
    max_ms: int | None
    hours: list[HourLag]
    largest: list[EventRecord]
    # 0 when the percentiles were computed from every event; else the bound of their relative error (they
    # came from the store's log-scale lag buckets, backend.lag_buckets). Counts are exact either way.
    percentile_error: float = 0.0


class LagService:
    """The lag of a partition's events, read-only over the index and its scans (``investigate``)."""

    def __init__(self, index: EventIndex, investigate: InvestigationIndex) -> None:
        self.index = index
        self.investigate = investigate

    def lag(
        self, source: str, event_type: str, day: str, *, late_ms: int = 3_600_000, top: int = 10
    ) -> LagReport:
        """Lag statistics of the accepted events of one partition, and its ``top`` largest-lag events."""
        try:
            parse_day(day, what="day")
        except TimeFormatError as exc:
            raise InvalidRequest(str(exc)) from None
        if late_ms < 0:
            raise InvalidRequest("the late threshold cannot be negative")
        rollup = self.investigate.lag_rollup(source, event_type, day, late_ms=late_ms)
        if rollup is not None:
            return self._from_rollup(source, event_type, day, late_ms, top, rollup)
        lags: list[int] = []
        by_hour: dict[str, list[int]] = {}
        duplicates = skewed = 0
        after: str | None = None
        while True:
            page = self.investigate.scan_partition(source, event_type, day, limit=SCAN_PAGE, after=after)
            for r in page.items:
                if not r.accepted:
                    duplicates += 1
                    continue
                lags.append(r.ingest_lag_ms)
                by_hour.setdefault(r.event_time[11:13], []).append(r.ingest_lag_ms)
                skewed += r.clock_skew
            after = page.next_cursor
            if after is None:
                break
        lags.sort()
        hours = []
        for hour in sorted(by_hour):
            values = sorted(by_hour[hour])
            hours.append(
                HourLag(
                    hour=hour,
                    count=len(values),
                    late=sum(v >= late_ms for v in values),
                    p50_ms=percentile(values, 50),
                    max_ms=values[-1],
                )
            )
        largest = (
            self.index.query_partition(
                source, event_type, day, status=IngestStatus.ACCEPTED, limit=top, descending=True
            ).items
            if top > 0 and lags
            else []
        )
        return LagReport(
            source=source,
            event_type=event_type,
            day=day,
            count=len(lags),
            duplicates=duplicates,
            clock_skew=skewed,
            late_threshold_ms=late_ms,
            late=sum(v >= late_ms for v in lags),
            p50_ms=percentile(lags, 50),
            p90_ms=percentile(lags, 90),
            p99_ms=percentile(lags, 99),
            max_ms=lags[-1] if lags else None,
            hours=hours,
            largest=largest,
        )

    def _from_rollup(
        self, source: str, event_type: str, day: str, late_ms: int, top: int, rollup: LagRollup
    ) -> LagReport:
        """The report from a store's rollups: exact counts, percentiles from the lag buckets."""
        everything = lag_buckets.merge(h.buckets for h in rollup.hours)
        hours = [
            HourLag(
                hour=h.hour,
                count=h.count,
                late=h.late,
                p50_ms=lag_buckets.percentile(h.buckets, 50, rollup.max_ms),
                max_ms=lag_buckets.percentile(h.buckets, 100, rollup.max_ms),
            )
            for h in rollup.hours
        ]
        largest = (
            self.index.query_partition(
                source, event_type, day, status=IngestStatus.ACCEPTED, limit=top, descending=True
            ).items
            if top > 0 and rollup.count
            else []
        )
        return LagReport(
            source=source,
            event_type=event_type,
            day=day,
            count=rollup.count,
            duplicates=rollup.duplicates,
            clock_skew=rollup.clock_skew,
            late_threshold_ms=late_ms,
            late=rollup.late,
            p50_ms=lag_buckets.percentile(everything, 50, rollup.max_ms),
            p90_ms=lag_buckets.percentile(everything, 90, rollup.max_ms),
            p99_ms=lag_buckets.percentile(everything, 99, rollup.max_ms),
            max_ms=rollup.max_ms,
            hours=hours,
            largest=largest,
            percentile_error=lag_buckets.LAG_ERROR,
        )
