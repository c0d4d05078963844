"""Investigation queries: how late did a partition's events arrive, and which days are short and why.

Read-only over the index ports. ``lag`` answers "how late is this source's data on this day" with
percentiles, an hourly histogram and the largest-lag events (one query on the lag index, largest first).
``gaps`` answers "which days are missing" for an entity or a source/type, and tells a day whose events
never arrived from one whose events arrived, but late.
"""

from __future__ import annotations

import re
import statistics
from datetime import date, timedelta
from enum import StrEnum

from pydantic import BaseModel

from backend.errors import InvalidRequest
from backend.model import EventRecord, IngestStatus
from backend.ports import DayCount, EventIndex, InvestigationIndex
from backend.times import TimeFormatError, parse_day

# Scans read this many receipts per call.
SCAN_PAGE = 5000
# Longest range of days `gaps` reports on in one call.
MAX_GAP_DAYS = 3660

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, *, what: str = "duration") -> int:
    """``90s``, ``15m``, ``1h30m``, ``2d``, ``250ms`` or a bare number of seconds, as milliseconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+", cleaned):
        return int(cleaned) * 1000
    if not cleaned or _DURATION.sub("", cleaned):
        raise InvalidRequest(f"{what} {text!r} is not a duration (e.g. 90s, 15m, 1h30m, 2d)")
    return int(sum(float(n) * _UNITS_MS[unit] for n, unit in _DURATION.findall(cleaned)))


def human_ms(ms: int) -> str:
    """A duration for people: ``850 ms``, ``42 s``, ``3m 05s``, ``2h 14m``, ``2d 03h``."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def percentile(sorted_values: list[int], pct: float) -> int | None:
    """Nearest-rank percentile of an ascending list (None when empty): p50 of [1, 2, 3, 4] is 2."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100), at least 1
    return sorted_values[int(rank) - 1]


def day_range(first_day: str, end_day: str) -> list[str]:
    """The days of ``[first_day, end_day)``; InvalidRequest for malformed, reversed or too long ranges."""
    try:
        first = date.fromisoformat(parse_day(first_day, what="first day"))
        end = date.fromisoformat(parse_day(end_day, what="end day"))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    if end <= first:
        raise InvalidRequest(f"the range [{first_day}, {end_day}) holds no day: the end day is exclusive")
    if (end - first).days > MAX_GAP_DAYS:
        raise InvalidRequest(f"the range [{first_day}, {end_day}) is longer than {MAX_GAP_DAYS} days")
    return [(first + timedelta(days=i)).isoformat() for i in range((end - first).days)]


# -- lag ----------------------------------------------------------------------------------------------


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


# -- gaps -----------------------------------------------------------------------------------------------


class DayStatus(StrEnum):
    OK = "ok"
    NEVER_ARRIVED = "never arrived"  # short even counting late arrivals (zero events: a missing day)
    ARRIVED_LATE = "arrived late"  # short on time, but the late arrivals fill it


class GapDay(BaseModel):
    day: str
    events: int  # accepted events, whenever they arrived
    on_time: int
    late: int
    duplicates: int
    status: DayStatus
    first_late_ingest: str | None = None
    last_late_ingest: str | None = None


class GapReport(BaseModel):
    """Per-day counts over ``[first_day, end_day)`` and the under-filled days, classified.

    A day is under-filled when its events that arrived on time (before the end of the day plus
    ``grace_ms``) are fewer than ``min_ratio`` times ``expected`` (by default the median of the daily
    counts in the range). It then "arrived late" if its late arrivals bring it to that level, and otherwise
    "never arrived"; ``missing_days`` are the days without a single event."""

    entity_id: str | None = None
    source: str | None = None
    event_type: str | None = None
    first_day: str
    end_day: str
    grace_ms: int
    min_ratio: float
    expected: float
    expected_given: bool
    days: list[GapDay]
    missing_days: list[str]
    never_arrived: list[str]
    arrived_late: list[str]


# -- the service ------------------------------------------------------------------------------------------


class Investigator:
    """Read-only investigation queries over the index ports."""

    def __init__(self, index: EventIndex, scans: InvestigationIndex) -> None:
        self.index = index
        self.scans = scans

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
        lags: list[int] = []
        by_hour: dict[str, list[int]] = {}
        duplicates = skewed = 0
        after: str | None = None
        while True:
            page = self.scans.scan_partition(source, event_type, day, limit=SCAN_PAGE, after=after)
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

    def gaps(
        self,
        first_day: str,
        end_day: str,
        *,
        entity_id: str | None = None,
        source: str | None = None,
        event_type: str | None = None,
        grace_ms: int = 3_600_000,
        min_ratio: float = 0.5,
        expected: float | None = None,
    ) -> GapReport:
        """Events per day of an entity, or of a source/type, over ``[first_day, end_day)``."""
        days = day_range(first_day, end_day)
        partition = source is not None and event_type is not None
        if entity_id is not None and (source is not None or event_type is not None):
            raise InvalidRequest("an entity cannot be combined with a source/type; choose one scope")
        if entity_id is None and not partition:
            raise InvalidRequest("choose a scope: an entity, or a source and an event type")
        if grace_ms < 0:
            raise InvalidRequest("the grace period cannot be negative")
        if not 0 < min_ratio <= 1:
            raise InvalidRequest("the minimum ratio must be in (0, 1]")
        if expected is not None and expected <= 0:
            raise InvalidRequest("the expected daily count must be positive")
        counts: list[DayCount]
        if entity_id is not None:
            counts = self.scans.day_counts_entity(entity_id, first_day, end_day, grace_ms=grace_ms)
        else:
            assert source is not None and event_type is not None
            counts = self.scans.day_counts_partition(
                source, event_type, first_day, end_day, grace_ms=grace_ms
            )
        found = {c.day: c for c in counts}
        totals = [found[d].accepted if d in found else 0 for d in days]
        baseline = float(expected) if expected is not None else float(statistics.median(totals))
        level = min_ratio * baseline
        out: list[GapDay] = []
        for d in days:
            c = found.get(d) or DayCount(day=d, accepted=0, late=0, duplicate=0)
            on_time = c.accepted - c.late
            if c.accepted == 0 and baseline > 0:
                status = DayStatus.NEVER_ARRIVED
            elif on_time >= level:
                status = DayStatus.OK
            elif c.accepted >= level:
                status = DayStatus.ARRIVED_LATE
            else:
                status = DayStatus.NEVER_ARRIVED
            out.append(
                GapDay(
                    day=d,
                    events=c.accepted,
                    on_time=on_time,
                    late=c.late,
                    duplicates=c.duplicate,
                    status=status,
                    first_late_ingest=c.first_late_ingest,
                    last_late_ingest=c.last_late_ingest,
                )
            )
        return GapReport(
            entity_id=entity_id,
            source=source if entity_id is None else None,
            event_type=event_type if entity_id is None else None,
            first_day=first_day,
            end_day=end_day,
            grace_ms=grace_ms,
            min_ratio=min_ratio,
            expected=baseline,
            expected_given=expected is not None,
            days=out,
            missing_days=[g.day for g in out if g.events == 0],
            never_arrived=[g.day for g in out if g.status is DayStatus.NEVER_ARRIVED],
            arrived_late=[g.day for g in out if g.status is DayStatus.ARRIVED_LATE],
        )
