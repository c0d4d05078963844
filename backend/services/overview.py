"""The overview: what is wrong in a range of days, ranked, with the evidence and the next command.

Holds :class:`OverviewService` (read-only over :class:`backend.ports.OverviewIndex`), its answer
:class:`Overview` and one :class:`Finding` per incident. Seven kinds are found, each from rollups (counts
per hour, per entity-day, per rejection reason, per versioned window), never from the events one by one:

- ``missing_day``: a source/type (or an entity) whose day is far below its usual count, late arrivals
  included; ``late_day``: short on time, filled by late arrivals;
- ``lag_spike``: hours of a day whose p90 lag jumps from the source/type's usual p90;
- ``duplicate_storm``: hours with an unusual burst of duplicate receipts;
- ``rejection_spike``: a day with an unusual burst of quarantined input, with its top reasons;
- ``clock_skew``: a source/type or entity whose producer clock runs ahead (event time after ingest time);
- ``aggregate_churn``: aggregate windows with many versions, or whose value moved far from its first.

"Usual" is a robust baseline (:mod:`backend.services.baseline`): the median and MAD of the other days of
the series over the range and the 28 days before it, the same weekday only once there are three weeks.
Thresholds are the ``[overview]`` section of ``settings.toml`` (:class:`backend.settings.OverviewSettings`).
Severity is a score from 0 to 100 (how far from usual, and how much data it touches); the list is sorted
by it, most severe first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

from pydantic import BaseModel

from backend.errors import InvalidRequest
from backend.ports import HourRollup, OverviewIndex
from backend.services.baseline import day_baseline, robust
from backend.services.findings import (
    Commands,
    Finding,
    FindingKind,
    days_between,
    duration,
    lag_percentile,
    slow_events,
)
from backend.services.overview_rules import entity_short_days, series_short_days, skew_findings
from backend.settings import OverviewSettings
from backend.times import Clock, TimeFormatError, parse_day

# The days before the range that feed the baselines (four weeks: three same weekdays and more).
HISTORY_DAYS = 28
# An hour with fewer accepted events than this is not judged for lag (its p90 is one or two events).
MIN_HOUR_EVENTS = 10


class Overview(BaseModel):
    """The findings of ``[first_day, end_day)``, most severe first (at most ``max_findings``; ``omitted``
    counts the rest)."""

    first_day: str
    end_day: str
    history_from: str  # where the baselines start
    findings: list[Finding]
    omitted: int = 0


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(parse_day(text, what=what))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None


class OverviewService:
    """Finds and ranks incidents over a range of days; reads only."""

    def __init__(
        self, index: OverviewIndex, settings: OverviewSettings | None = None, *, clock: Clock | None = None
    ) -> None:
        self.index = index
        self.settings = settings or OverviewSettings()
        self.clock = clock or Clock()

    def range(self, since: str | None = None, until: str | None = None) -> tuple[str, str] | None:
        """``[first_day, end_day)`` of ``since``..``until`` (both inclusive); a bound not given is taken
        from the store: the last ``days`` event days ending with the last one. None when there is nothing."""
        first = _day(since, "--since") if since else None
        last = _day(until, "--until") if until else None
        if first is None or last is None:
            span = self.index.event_day_span()
            if last is None:
                if span is not None:
                    last = max(date.fromisoformat(span[1]), first or date.min)
                elif first is not None:
                    last = first
                else:
                    return None
            if first is None:
                first = last - timedelta(days=self.settings.days - 1)
        if last < first:
            raise InvalidRequest(f"--until {last} is before --since {first}")
        if (last - first).days >= 366:
            raise InvalidRequest(f"the range {first}..{last} is longer than 366 days: choose a shorter one")
        return first.isoformat(), (last + timedelta(days=1)).isoformat()

    def overview(
        self, since: str | None = None, until: str | None = None, *, context: Sequence[str] = ()
    ) -> Overview:
        """The findings of ``since``..``until`` (inclusive days; default: the last ``days`` event days).
        ``context``: options appended to every ``next`` command (``--workspace DIR``, ``--stack NAME``)."""
        bounds = self.range(since, until)
        if bounds is None:
            today = date.today().isoformat()
            return Overview(first_day=today, end_day=today, history_from=today, findings=[])
        first_day, end_day = bounds
        history = (date.fromisoformat(first_day) - timedelta(days=HISTORY_DAYS)).isoformat()
        s = self.settings
        cmd = Commands(context)
        hours = self.index.hour_rollups(history, end_day, grace_ms=s.grace_ms)
        in_range = (first_day, end_day)
        # A day still open (it has not ended, plus the grace period) cannot be judged short yet: on a live
        # stack today is always below its usual count.
        closed_before = (self.clock.now() - timedelta(milliseconds=s.grace_ms)).date().isoformat()
        closed = (first_day, min(end_day, closed_before))
        findings: list[Finding] = []
        short = series_short_days(hours, history, closed, s, cmd)
        findings += short
        explained = {(f.source, f.event_type, f.day) for f in short}
        findings += _lag_spikes(hours, in_range, explained, s, cmd)
        findings += _duplicate_storms(hours, in_range, s, cmd)
        entities = self.index.entity_day_counts(
            history, end_day, grace_ms=s.grace_ms, min_accepted=s.entity_min_baseline, min_skewed=s.skew_min
        )
        findings += entity_short_days(entities, history, closed, {f.day for f in short}, s, cmd)
        findings += skew_findings(hours, entities, in_range, s, cmd)
        findings += _rejection_spikes(self.index, history, in_range, s, cmd)
        findings += _churn(self.index, in_range, s, cmd)
        # Equal scores: what a whole source/type suffered (a day late or short, a storm) before what one
        # entity's window shows (a window recomputed is usually the consequence, not the incident).
        findings.sort(
            key=lambda f: (
                -f.severity,
                f.entity_id is not None,
                f.day,
                f.kind,
                f.source or "",
                f.entity_id or "",
            )
        )
        keep = findings[: s.max_findings]
        return Overview(
            first_day=first_day,
            end_day=end_day,
            history_from=history,
            findings=keep,
            omitted=len(findings) - len(keep),
        )


def _series_hours(hours: list[HourRollup]) -> dict[tuple[str, str], list[HourRollup]]:
    out: dict[tuple[str, str], list[HourRollup]] = defaultdict(list)
    for h in hours:
        out[(h.source, h.event_type)].append(h)
    return out


def _lag_spikes(
    hours: list[HourRollup],
    in_range: tuple[str, str],
    explained: set[tuple[str | None, str | None, str]],
    s: OverviewSettings,
    cmd: Commands,
) -> list[Finding]:
    out: list[Finding] = []
    for (source, event_type), rows in sorted(_series_hours(hours).items()):
        p90s = [
            (h, lag_percentile(h.lag_buckets, h.max_lag_ms, 90))
            for h in rows
            if h.accepted >= MIN_HOUR_EVENTS
        ]
        days = sorted({h.day for h, _ in p90s if in_range[0] <= h.day < in_range[1]})
        for day in days:
            if (source, event_type, day) in explained:
                continue  # a day filled by late arrivals: its lag is that finding's evidence
            base = robust([p or 0 for h, p in p90s if h.day != day])
            if base.peers == 0:
                continue
            usual = max(base.median, 1.0)
            spiked = [
                (h, p)
                for h, p in p90s
                if h.day == day
                and p is not None
                and p >= s.lag_min_ms
                and p >= s.lag_p90_ratio * usual
                and base.above(p, s.mad_k)
                and slow_events(h, s.lag_min_ms) >= s.lag_min_events
            ]
            if not spiked:
                continue
            worst, p90 = max(spiked, key=lambda hp: (hp[1] or 0, -hp[0].hour))
            assert p90 is not None
            ratio = p90 / usual
            hours_list = [h.hour for h, _ in spiked]
            out.append(
                Finding(
                    kind=FindingKind.LAG_SPIKE,
                    severity=round(min(100.0, 25 + 8 * int(ratio).bit_length() + 2 * len(spiked)), 1),
                    source=source,
                    event_type=event_type,
                    day=day,
                    hour=worst.hour,
                    summary=(
                        f"{source}/{event_type} on {day}: p90 lag reached {duration(p90)} at "
                        f"{worst.hour:02d}:00 UTC ({len(spiked)} hour(s) affected), against a usual "
                        f"{duration(int(usual))}."
                    ),
                    evidence={
                        "p90_ms": p90,
                        "baseline_p90_ms": base.median,
                        "baseline_spread_ms": round(base.spread, 1),
                        "ratio": round(ratio, 1),
                        "hours": hours_list,
                        "max_lag_ms": worst.max_lag_ms,
                        "events_in_hour": worst.accepted,
                        "slow_events": sum(slow_events(h, s.lag_min_ms) for h, _ in spiked),
                        "percentile_is_bucket_bound": True,
                    },
                    next=cmd("lag", "--source", source, "--type", event_type, "--day", day),
                )
            )
    return out


def _duplicate_storms(
    hours: list[HourRollup], in_range: tuple[str, str], s: OverviewSettings, cmd: Commands
) -> list[Finding]:
    out: list[Finding] = []
    for (source, event_type), rows in sorted(_series_hours(hours).items()):
        days = sorted({h.day for h in rows if in_range[0] <= h.day < in_range[1] and h.duplicate})
        for day in days:
            base = robust([h.duplicate for h in rows if h.day != day])
            storm = [
                h
                for h in rows
                if h.day == day
                and h.duplicate >= s.min_duplicates
                and h.duplicate >= s.duplicate_share * (h.accepted + h.duplicate)
                and base.above(h.duplicate, s.mad_k)
            ]
            if not storm:
                continue
            total = sum(h.duplicate for h in storm)
            events = sum(h.accepted for h in storm)
            worst = max(storm, key=lambda h: (h.duplicate, -h.hour))
            share = total / max(1, total + events)
            out.append(
                Finding(
                    kind=FindingKind.DUPLICATE_STORM,
                    severity=round(min(100.0, 30 + 50 * share + min(20, total / 100)), 1),
                    source=source,
                    event_type=event_type,
                    day=day,
                    hour=worst.hour,
                    summary=(
                        f"{source}/{event_type} on {day}: {total} duplicate receipts in "
                        f"{len(storm)} hour(s) (peak {worst.duplicate} at {worst.hour:02d}:00 UTC), "
                        f"{share:.0%} of what arrived, against a usual {base.median:g} an hour."
                    ),
                    evidence={
                        "duplicates": total,
                        "accepted": events,
                        "share": round(share, 3),
                        "hours": {f"{h.hour:02d}": h.duplicate for h in storm},
                        "baseline_per_hour": base.median,
                        "baseline_spread": round(base.spread, 2),
                    },
                    next=cmd(
                        "events",
                        "--source",
                        source,
                        "--type",
                        event_type,
                        "--day",
                        day,
                        "--status",
                        "DUPLICATE",
                    ),
                )
            )
    return out


def reason_kind(reason: str) -> str:
    """A rejection reason without the value it quotes (``..., got 'web app'``): what groups reasons."""
    kind = reason.split(", got ", 1)[0]
    return kind if len(kind) <= 120 else kind[:119] + "…"


def _rejection_spikes(
    index: OverviewIndex, history: str, in_range: tuple[str, str], s: OverviewSettings, cmd: Commands
) -> list[Finding]:
    rows = index.rejection_counts(history, in_range[1])
    series: dict[tuple[str | None, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: dict[tuple[str | None, str | None, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        series[(r.source, r.event_type)][r.day] += r.count
        reasons[(r.source, r.event_type, r.day)][reason_kind(r.reason)] += r.count
    all_days = days_between(history, in_range[1])
    out: list[Finding] = []
    for (source, event_type), counts in sorted(
        series.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "")
    ):
        daily = {d: float(counts.get(d, 0)) for d in all_days}
        for day in days_between(*in_range):
            n = counts.get(day, 0)
            if n < s.min_rejections:
                continue
            base = day_baseline(daily, day)
            if not (base.above(n, s.mad_k) and n >= 2 * base.median):
                continue
            top = sorted(reasons[(source, event_type, day)].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            who = f"{source}/{event_type}" if source and event_type else (source or "unreadable input")
            args = ["events", "--status", "REJECTED", "--day", day]
            if source:
                args += ["--source", source]
            if event_type:
                args += ["--type", event_type]
            out.append(
                Finding(
                    kind=FindingKind.REJECTION_SPIKE,
                    severity=round(min(100.0, 30 + 10 * int(n / max(1.0, base.median)).bit_length()), 1),
                    source=source,
                    event_type=event_type,
                    day=day,
                    summary=(
                        f"{who} on {day}: {n} requests quarantined against a usual {base.median:g} a day, "
                        f"mostly '{top[0][0]}' ({top[0][1]})."
                    ),
                    evidence={
                        "rejected": n,
                        "baseline_per_day": base.median,
                        "baseline_spread": round(base.spread, 2),
                        "top_reasons": [{"reason": k, "count": c} for k, c in top],
                    },
                    next=cmd(*args),
                )
            )
    return out


def _churn(
    index: OverviewIndex, in_range: tuple[str, str], s: OverviewSettings, cmd: Commands
) -> list[Finding]:
    out: list[Finding] = []
    for w in index.churned_windows(*in_range):
        change: float | None = None
        if isinstance(w.first_value, int | float) and isinstance(w.last_value, int | float):
            change = (w.last_value - w.first_value) / abs(w.first_value) if w.first_value else None
            if change is None and w.last_value != w.first_value:
                change = 1.0
        big = change is not None and abs(change) > s.churn_min_change
        if w.versions < s.churn_min_versions and not big:
            continue
        moved = (
            f"its value moved from {w.first_value} to {w.last_value} ({change:+.0%})"
            if change is not None
            else f"its value is {w.last_value} (version 1: {w.first_value})"
        )
        out.append(
            Finding(
                kind=FindingKind.AGGREGATE_CHURN,
                severity=round(min(100.0, 15 + 5 * w.versions + 40 * min(1.0, abs(change or 0))), 1),
                entity_id=w.entity_id,
                day=w.day,
                metric=w.metric,
                summary=(
                    f"{w.metric} of {w.entity_id} on {w.day} has been recomputed into {w.versions} versions; "
                    f"{moved}."
                ),
                evidence={
                    "metric": w.metric,
                    "versions": w.versions,
                    "first_value": w.first_value,
                    "last_value": w.last_value,
                    "relative_change": None if change is None else round(change, 4),
                    "last_computed_at": w.last_computed_at,
                },
                next=cmd("aggregates", "--entity", w.entity_id, "--day", w.day, "--metric", w.metric),
            )
        )
    return out
