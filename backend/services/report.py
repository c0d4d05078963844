"""The facts of an incident report of one (entity, day): what the index holds for the window, what arrived
late or twice, the day's lag and the entity's gaps, the replays that covered the window, the aggregate
versions with the explanation of every change, and what the closing checklist can check.

Holds :class:`ReportService` (read-only over the ports) and its answer :class:`IncidentReport` (with
:class:`PartitionActivity`, :class:`LateArrival`, :class:`LagBucket` and :class:`VersionChange`).
Rendering the facts is the caller's: Markdown in ``pik_console/report.py``, HTML in
``pik_console/report_html.py``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from datetime import date, timedelta

from pydantic import BaseModel

from backend.errors import InvalidRequest
from backend.model import AggregateVersion, ReplayAudit
from backend.ports import (
    AggregateStore,
    AuditLog,
    EventIndex,
    InvestigationIndex,
    ManifestEntry,
    RawCatalog,
    Receipt,
    ReplayQueue,
)
from backend.services.gaps import GapReport, GapService
from backend.services.lag import LagReport, LagService
from backend.services.processor import inputs_hash
from backend.services.versions import VersionService
from backend.times import TimeFormatError, parse_day

# An event is late when it was ingested this long after its event time (the report's headings say "1h").
LATE_MS = 3_600_000
# Scans read this many receipts per call.
SCAN_PAGE = 5000
# Late arrivals listed by name (the count is always complete).
LATE_LISTED = 10
# Audit records read to find the replays that covered the window: the newest 100 pages of 100.
AUDIT_PAGES = 100
AUDIT_PAGE = 100
# The lag histogram's buckets: (label, lower bound in ms); a bucket holds lags from its bound to the next one.
LAG_BUCKETS: tuple[tuple[str, int], ...] = (
    ("< 1 s", 0),
    ("1-10 s", 1_000),
    ("10 s-1 min", 10_000),
    ("1-10 min", 60_000),
    ("10 min-1 h", 600_000),
    ("1-6 h", LATE_MS),
    ("6-24 h", 21_600_000),
    ("1-2 d", 86_400_000),
    ("≥ 2 d", 172_800_000),
)


class PartitionActivity(BaseModel):
    """The entity's receipts of one (source, event_type) in the window."""

    source: str
    event_type: str
    events: int  # accepted
    duplicates: int  # duplicate receipts
    late: int  # accepted with a lag of at least LATE_MS
    clock_skew: int
    max_lag_ms: int  # 0 without accepted events


class LateArrival(BaseModel):
    """An accepted event of the window that arrived late."""

    event_id: str
    source: str
    event_type: str
    event_time: str
    ingest_time: str
    ingest_lag_ms: int


class LagBucket(BaseModel):
    """Accepted events of the window whose lag is in ``[low_ms, high_ms)`` (``high_ms`` None: no bound)."""

    label: str
    low_ms: int
    high_ms: int | None
    events: int


class VersionChange(BaseModel):
    """Why a metric's value changed from version ``newer - 1`` to ``newer``, in sentences."""

    metric: str
    newer: int
    explanation: list[str]


class IncidentReport(BaseModel):
    """The facts of one (entity, day), read from ``backend`` at ``location``."""

    entity_id: str
    day: str
    window_start: str  # the window of the day, [start, end)
    window_end: str
    backend: str
    location: str
    events: int  # accepted events of the window
    duplicates: int  # duplicate receipts of the window
    partitions: list[PartitionActivity]  # by (source, event_type)
    late_arrivals: int
    largest_late: list[LateArrival]  # the LATE_LISTED largest lags, largest first
    duplicated_events: int  # events with at least one duplicate receipt
    most_receipts: int  # receipts of the most repeated event (0 without duplicates)
    lag: list[LagReport]  # of every partition the entity has receipts in, all entities
    lag_histogram: list[LagBucket]  # the window's accepted events by lag, every bucket of LAG_BUCKETS
    gaps: GapReport  # the entity's days around the day
    replays: list[ReplayAudit]  # that covered the window, oldest first
    versions: list[AggregateVersion]  # by metric then version
    changes: list[VersionChange]  # one per pair of consecutive versions
    raw_missing: int  # receipts of the window without their raw bytes
    dead_letters: int
    drift: list[str]  # metrics whose latest version's inputs are not the window's events now


class ReportService:
    """Gathers the facts of incident reports over the ports; reads only.

    ``audit``, ``aggregates``, ``catalog`` and ``queue`` may be None where the backend has none: the
    report then has no replays, no versions, no missing raw bytes and no dead letters. ``backend`` and
    ``location`` name what the report was read from (the report's header says so)."""

    def __init__(
        self,
        index: EventIndex,
        investigate: InvestigationIndex,
        audit: AuditLog | None,
        aggregates: AggregateStore | None,
        *,
        catalog: RawCatalog | None = None,
        queue: ReplayQueue | None = None,
        backend: str = "local",
        location: str = "",
    ) -> None:
        self.index = index
        self.investigate = investigate
        self.audit = audit
        self.aggregates = aggregates
        self.catalog = catalog
        self.queue = queue
        self.backend = backend
        self.location = location

    def gather(self, entity_id: str, day: str) -> IncidentReport:
        """The facts of ``entity_id`` on ``day`` (UTC). InvalidRequest for a bad day."""
        try:
            parse_day(day)
        except TimeFormatError as exc:
            raise InvalidRequest(str(exc)) from None
        start, end = _day_start(day), _day_start(_add_days(day, 1))
        receipts = self._window(entity_id, start, end)
        accepted = [r for r in receipts if r.accepted]
        dups = [r for r in receipts if not r.accepted]
        partitions = sorted({(r.source, r.event_type) for r in receipts})
        late = sorted((r for r in accepted if r.ingest_lag_ms >= LATE_MS), key=lambda r: -r.ingest_lag_ms)
        repeats = Counter(r.event_id for r in dups)
        lags = LagService(self.index, self.investigate)
        lag = [lags.lag(s, t, day, late_ms=LATE_MS, top=0) for s, t in partitions]
        gaps = self._gaps(entity_id, day)
        replays = self._replays(entity_id, day, set(partitions))
        versions, changes = self._versions(entity_id, day)
        missing = self.catalog.missing([r.s3_key for r in receipts]) if self.catalog and receipts else set()
        return IncidentReport(
            entity_id=entity_id,
            day=day,
            window_start=start,
            window_end=end,
            backend=self.backend,
            location=self.location,
            events=len(accepted),
            duplicates=len(dups),
            partitions=[_activity(s, t, accepted, dups) for s, t in partitions],
            late_arrivals=len(late),
            largest_late=[
                LateArrival(
                    event_id=r.event_id,
                    source=r.source,
                    event_type=r.event_type,
                    event_time=r.event_time,
                    ingest_time=r.ingest_time,
                    ingest_lag_ms=r.ingest_lag_ms,
                )
                for r in late[:LATE_LISTED]
            ],
            duplicated_events=len(repeats),
            most_receipts=max(repeats.values()) + 1 if repeats else 0,
            lag=lag,
            lag_histogram=_histogram(accepted),
            gaps=gaps,
            replays=replays,
            versions=versions,
            changes=changes,
            raw_missing=len(missing),
            dead_letters=self.queue.depth().dead if self.queue is not None else 0,
            drift=_drift(versions, accepted),
        )

    def _window(self, entity_id: str, start: str, end: str) -> list[Receipt]:
        out: list[Receipt] = []
        after: str | None = None
        while True:
            page = self.investigate.scan_entity(entity_id, start, end, limit=SCAN_PAGE, after=after)
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            after = page.next_cursor

    def _gaps(self, entity_id: str, day: str) -> GapReport:
        """The entity's days from a week before ``day`` to a week after it, or to its last day with events."""
        service = GapService(self.index, self.investigate)
        first = _add_days(day, -7)
        gaps = service.gaps(first, _add_days(day, 8), entity_id=entity_id, grace_ms=LATE_MS)
        last = max((g.day for g in gaps.days if g.events), default=day)
        if last < gaps.days[-1].day:
            # Days after the last one with events hold nothing yet: not gaps, and not part of the median.
            gaps = service.gaps(first, _add_days(max(last, day), 1), entity_id=entity_id, grace_ms=LATE_MS)
        return gaps

    def _replays(self, entity_id: str, day: str, partitions: set[tuple[str, str]]) -> list[ReplayAudit]:
        """The replays in the audit trail (its newest AUDIT_PAGES pages) whose scope covers the window."""
        if self.audit is None:
            return []
        found: list[ReplayAudit] = []
        after: str | None = None
        for _ in range(AUDIT_PAGES):
            page = self.audit.query(limit=AUDIT_PAGE, after=after)
            found += [a for a in page.items if _covers(a, entity_id, day, partitions)]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        return sorted(found, key=lambda a: (a.started_at, a.replay_id))

    def _versions(self, entity_id: str, day: str) -> tuple[list[AggregateVersion], list[VersionChange]]:
        """The window's versions, and the explanation of each change between two consecutive ones."""
        if self.aggregates is None:
            return [], []
        service = VersionService(self.aggregates, self.investigate, self.audit)
        versions = service.versions(entity_id, day)
        changes = []
        for metric in sorted({v.metric for v in versions}):
            numbers = [v.version for v in versions if v.metric == metric]
            for newer in numbers[1:]:
                diff = service.diff(entity_id, day, metric, newer - 1, newer)
                changes.append(VersionChange(metric=metric, newer=newer, explanation=diff.explanation))
        return versions, changes


def _day_start(day: str) -> str:
    return f"{day}T00:00:00.000Z"


def _add_days(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _activity(
    source: str, event_type: str, accepted: list[Receipt], dups: list[Receipt]
) -> PartitionActivity:
    mine = [r for r in accepted if (r.source, r.event_type) == (source, event_type)]
    return PartitionActivity(
        source=source,
        event_type=event_type,
        events=len(mine),
        duplicates=sum(1 for r in dups if (r.source, r.event_type) == (source, event_type)),
        late=sum(1 for r in mine if r.ingest_lag_ms >= LATE_MS),
        clock_skew=sum(1 for r in mine if r.clock_skew),
        max_lag_ms=max((r.ingest_lag_ms for r in mine), default=0),
    )


def _histogram(accepted: list[Receipt]) -> list[LagBucket]:
    bounds = [low for _, low in LAG_BUCKETS]
    counts = [0] * len(bounds)
    for r in accepted:
        counts[bisect_right(bounds, r.ingest_lag_ms) - 1] += 1
    highs: list[int | None] = [*bounds[1:], None]
    return [
        LagBucket(label=label, low_ms=low, high_ms=high, events=n)
        for (label, low), high, n in zip(LAG_BUCKETS, highs, counts, strict=True)
    ]


def _covers(a: ReplayAudit, entity_id: str, day: str, partitions: set[tuple[str, str]]) -> bool:
    """Whether replay ``a``'s scope includes the entity's window of ``day``."""
    r = a.request
    if r.entity_id is not None:
        return (
            r.entity_id == entity_id
            and (r.start_time or "") < _day_start(_add_days(day, 1))
            and (r.end_time or "") > _day_start(day)
        )
    if (r.source, r.event_type) not in partitions:
        return False
    return (r.start_day or "") <= day < (r.end_day or "")


def _drift(versions: list[AggregateVersion], accepted: list[Receipt]) -> list[str]:
    """The metrics whose latest version's inputs are not the window's accepted events now (by hash)."""
    latest: dict[str, AggregateVersion] = {}
    for v in versions:
        latest[v.metric] = v
    out = []
    for metric, v in sorted(latest.items()):
        spec = v.definition
        chosen = sorted(
            (
                r
                for r in accepted
                if (spec.event_type in (None, r.event_type)) and (spec.source in (None, r.source))
            ),
            key=lambda r: r.event_id,
        )
        manifest = [ManifestEntry(r.event_id, r.payload_sha, r.ingest_time, r.ingest_lag_ms) for r in chosen]
        if inputs_hash(manifest) != v.inputs_hash:
            out.append(metric)
    return out
