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
from typing import Protocol

from pydantic import BaseModel

from backend.errors import InvalidRequest, StoreError
from backend.model import AggregateVersion, EventRecord, IngestStatus, ReplayAudit
from backend.ports import AggregateStore, DayCount, EventIndex, InvestigationIndex, ManifestEntry
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


# -- aggregate versions and why they differ ------------------------------------------------------------------


class LagSummary(BaseModel):
    min_ms: int
    p50_ms: int
    max_ms: int


class InputChange(BaseModel):
    """An input added to (or removed from) an aggregate between two versions."""

    event_id: str
    ingest_time: str
    ingest_lag_ms: int
    after_older: bool  # ingested after the older version was computed


class ReplaySummary(BaseModel):
    replay_id: str
    known: bool  # found in the audit trail
    actor: str | None = None
    started_at: str | None = None
    outcome: str | None = None
    sent: int | None = None
    scope: str | None = None


class VersionDiff(BaseModel):
    """Two versions of one (entity, day, metric), what changed between their inputs, and why."""

    entity_id: str
    day: str
    metric: str
    older: AggregateVersion
    newer: AggregateVersion
    delta: int | float | None
    added: int
    removed: int
    changed: int  # same event id, another payload hash
    added_after_older: int  # late arrivals: ingested after the older version was computed
    added_before_older: int  # in the index when the older version was computed, yet not among its inputs
    late_lag: LagSummary | None
    duplicates_excluded: int  # duplicate receipts of the newer version's inputs in the window
    duplicates_after_older: int
    definition_changed: bool
    replays: list[ReplaySummary]
    added_sample: list[InputChange]
    removed_sample: list[InputChange]
    explanation: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.explanation)


class _Audit(Protocol):
    def get(self, replay_id: str) -> ReplayAudit | None: ...


def value_text(value: int | float | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6g}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


class AggregateInspector:
    """Reads aggregate versions and explains the difference between two of them."""

    def __init__(
        self, aggregates: AggregateStore, scans: InvestigationIndex, audit: _Audit | None = None
    ) -> None:
        self.aggregates = aggregates
        self.scans = scans
        self.audit = audit

    def versions(self, entity_id: str, day: str, metric: str | None = None) -> list[AggregateVersion]:
        """Every version of the window (of one metric, or all), by metric then version."""
        out: list[AggregateVersion] = []
        after: str | None = None
        while True:
            page = self.aggregates.versions(entity_id, day, metric=metric, limit=500, after=after)
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            after = page.next_cursor

    def diff(
        self,
        entity_id: str,
        day: str,
        metric: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> VersionDiff:
        """The difference between two versions (by default the last two) and its explanation."""
        latest = self.aggregates.latest(entity_id, day, metric)
        if latest is None:
            raise InvalidRequest(f"{metric} has no versions for {entity_id!r} on {day}")
        to_v = to_version if to_version is not None else latest.version
        from_v = from_version if from_version is not None else to_v - 1
        if from_v < 1 or to_v <= from_v:
            if latest.version == 1 and from_version is None and to_version is None:
                raise InvalidRequest(
                    f"{metric} has a single version for {entity_id!r} on {day}: nothing to diff"
                )
            raise InvalidRequest(f"choose two versions with 1 <= from < to (got from {from_v}, to {to_v})")
        older = self.aggregates.get(entity_id, day, metric, from_v)
        newer = self.aggregates.get(entity_id, day, metric, to_v)
        if older is None or newer is None:
            raise InvalidRequest(f"{metric} of {entity_id!r} on {day} has versions 1 to {latest.version}")
        old_inputs = self._manifest(older)
        new_inputs = self._manifest(newer)
        old_ids = {e.event_id: e for e in old_inputs}
        new_ids = {e.event_id: e for e in new_inputs}
        cutoff = older.computed_at

        def change(e: ManifestEntry) -> InputChange:
            return InputChange(
                event_id=e.event_id,
                ingest_time=e.ingest_time,
                ingest_lag_ms=e.ingest_lag_ms,
                after_older=e.ingest_time > cutoff,
            )

        added = sorted(
            (change(e) for i, e in new_ids.items() if i not in old_ids), key=lambda c: c.ingest_time
        )
        removed = sorted(
            (change(e) for i, e in old_ids.items() if i not in new_ids), key=lambda c: c.ingest_time
        )
        changed = sum(
            1 for i, e in new_ids.items() if i in old_ids and old_ids[i].payload_sha != e.payload_sha
        )
        late = sorted(c.ingest_lag_ms for c in added if c.after_older)
        dups = dups_after = 0
        after: str | None = None
        while True:
            page = self.scans.scan_entity(
                entity_id, newer.window_start, newer.window_end, limit=SCAN_PAGE, after=after
            )
            for r in page.items:
                if not r.accepted and r.event_id in new_ids:
                    dups += 1
                    dups_after += r.ingest_time > cutoff
            if page.next_cursor is None:
                break
            after = page.next_cursor
        delta: int | float | None = None
        if isinstance(older.value, int | float) and isinstance(newer.value, int | float):
            delta = newer.value - older.value
        diff = VersionDiff(
            entity_id=entity_id,
            day=day,
            metric=metric,
            older=older,
            newer=newer,
            delta=delta,
            added=len(added),
            removed=len(removed),
            changed=changed,
            added_after_older=len(late),
            added_before_older=len(added) - len(late),
            late_lag=LagSummary(min_ms=late[0], p50_ms=percentile(late, 50) or 0, max_ms=late[-1])
            if late
            else None,
            duplicates_excluded=dups,
            duplicates_after_older=dups_after,
            definition_changed=older.definition_hash != newer.definition_hash,
            replays=[self._replay(r) for r in newer.replay_ids],
            added_sample=added[:10],
            removed_sample=removed[:10],
            explanation=[],
        )
        diff.explanation.extend(explain(diff))
        return diff

    def _manifest(self, version: AggregateVersion) -> list[ManifestEntry]:
        entries = self.aggregates.manifest(version.inputs_hash)
        if entries is None:
            raise StoreError(
                f"the input manifest of version {version.version} ({version.inputs_hash[:16]}) is missing"
            )
        return entries

    def _replay(self, replay_id: str) -> ReplaySummary:
        record = self.audit.get(replay_id) if self.audit is not None else None
        if record is None:
            return ReplaySummary(replay_id=replay_id, known=False)
        from backend.services.replay import describe_scope

        return ReplaySummary(
            replay_id=replay_id,
            known=True,
            actor=record.actor,
            started_at=record.started_at,
            outcome=record.outcome.value,
            sent=record.sent,
            scope=describe_scope(record.request),
        )


def explain(d: VersionDiff) -> list[str]:
    """The diff in sentences a user can paste into an incident channel."""
    o, n = d.older, d.newer
    lines: list[str] = []
    if d.delta is None:
        change = f"went from {value_text(o.value)} to {value_text(n.value)}"
    elif d.delta == 0:
        change = f"stayed at {value_text(n.value)}"
    else:
        pct = f", {100 * d.delta / o.value:+.1f}%" if o.value else ""
        sign = "+" if d.delta > 0 else "-"
        step = f"{sign}{value_text(abs(d.delta))}{pct}"
        change = f"went from {value_text(o.value)} to {value_text(n.value)} ({step})"
    between = f"version {o.version} and version {n.version}"
    if n.version - o.version > 1:
        between += f" ({_plural(n.version - o.version - 1, 'version')} in between)"
    lines.append(f"{d.metric} of {d.entity_id} on {d.day} {change} between {between}.")
    lines.append(
        f"- Version {o.version} was computed at {o.computed_at} from {_plural(o.input_count, 'event')}; "
        f"version {n.version} at {n.computed_at} from {_plural(n.input_count, 'event')}."
    )
    if d.added:
        text = f"- {_plural(d.added, 'event was', 'events were')} added"
        if d.added_after_older and d.late_lag is not None:
            lag = d.late_lag
            spread = (
                human_ms(lag.min_ms)
                if lag.min_ms == lag.max_ms
                else f"{human_ms(lag.min_ms)} to {human_ms(lag.max_ms)}, median {human_ms(lag.p50_ms)}"
            )
            if d.added == 1:
                who = "it was"
            elif d.added_after_older == d.added:
                who = "all of them were"
            else:
                who = f"{d.added_after_older:,} of them were"
            text += (
                f": {who} ingested after version {o.version} was computed "
                f"({'a late arrival' if d.added_after_older == 1 else 'late arrivals'}), with an ingest lag "
                f"of {spread}"
            )
        lines.append(text + ".")
        if d.added_before_older:
            reason = (
                "the metric's definition changed"
                if d.definition_changed
                else f"version {o.version} was computed from an earlier read of the index"
            )
            lines.append(
                f"- {_plural(d.added_before_older, 'added event was', 'added events were')} already "
                f"ingested when version {o.version} was computed but not among its inputs: {reason}."
            )
    if d.removed:
        reason = (
            "the metric's definition changed (its filters now leave them out)"
            if d.definition_changed
            else "the event index is append-only, so this is unexpected: check what wrote version "
            f"{o.version}"
        )
        lines.append(
            f"- {_plural(d.removed, 'input', 'inputs')} of version {o.version} "
            f"{'is' if d.removed == 1 else 'are'} not among the inputs of version {n.version}: {reason}."
        )
    if d.changed:
        lines.append(f"- {_plural(d.changed, 'input has', 'inputs have')} another payload hash than before.")
    if not (d.added or d.removed or d.changed):
        lines.append("- The inputs are the same events.")
    if d.definition_changed:
        lines.append(
            f"- The metric's definition changed: {o.definition.model_dump(exclude_none=True)} -> "
            f"{n.definition.model_dump(exclude_none=True)}."
        )
    if d.replays:
        for r in d.replays:
            if r.known:
                lines.append(
                    f"- Version {n.version} was computed after replay {r.replay_id}, run by {r.actor} at "
                    f"{r.started_at} ({r.outcome}, {_plural(r.sent or 0, 'message')} sent; scope: {r.scope})."
                )
            else:
                lines.append(
                    f"- Version {n.version} was computed after replay {r.replay_id} "
                    "(not in this audit trail)."
                )
    else:
        lines.append(f"- Version {n.version} was not caused by a replay (a direct recompute).")
    if d.duplicates_excluded:
        since = (
            f" ({d.duplicates_after_older:,} of them arrived after version {o.version} was computed)"
            if d.duplicates_after_older
            else ""
        )
        lines.append(
            f"- {_plural(d.duplicates_excluded, 'duplicate receipt')} of these events "
            f"{'was' if d.duplicates_excluded == 1 else 'were'} excluded: each event counts once{since}."
        )
    else:
        lines.append("- No duplicate receipts: every input was received once.")
    return lines
