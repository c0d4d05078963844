"""Gaps: which days of an entity, or of a source/type, are short, and did their events never arrive or
arrive late.

Holds :class:`GapService` (read-only over the index ports) and its answer :class:`GapReport`, one
:class:`GapDay` per day with its :class:`DayStatus`. Counts come from per-day rollups, not from the events.
"""

from __future__ import annotations

import statistics
from enum import StrEnum

from pydantic import BaseModel

from backend.errors import InvalidRequest
from backend.ports import DayCount, EventIndex, InvestigationIndex
from backend.times import day_range


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


class GapService:
    """Per-day counts and their gaps, read-only over the index and its scans (``investigate``)."""

    def __init__(self, index: EventIndex, investigate: InvestigationIndex) -> None:
        self.index = index
        self.investigate = investigate

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
            counts = self.investigate.day_counts_entity(entity_id, first_day, end_day, grace_ms=grace_ms)
        else:
            assert source is not None and event_type is not None
            counts = self.investigate.day_counts_partition(
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
