"""The overview's rules over daily counts: short days (missing or filled late) of a source/type or an
entity, and producer clocks that run ahead. Each returns :class:`backend.services.findings.Finding` s; the
service (:mod:`backend.services.overview`) ranks them with the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from backend.ports import EntityDayCount, HourRollup
from backend.services.baseline import day_baseline, with_count_noise
from backend.services.findings import Commands, Finding, FindingKind, days_between, duration, duration_option
from backend.settings import OverviewSettings

# A day of an entity is judged for clock skew only when at least this share of its events is skewed (a
# source whose every producer runs ahead is one source/type finding, not one per entity).
ENTITY_SKEW_SHARE = 0.5


def _daily(
    rows: Iterable[tuple[str, str, int, int]], history: str, end_day: str
) -> dict[str, dict[str, tuple[int, int]]]:
    """(key, day, accepted, late) rows as key -> every day from the key's first day to ``end_day`` ->
    (accepted, late), zeros for the days without a row."""
    seen: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for key, day, accepted, late in rows:
        cell = seen[key].setdefault(day, [0, 0])
        cell[0] += accepted
        cell[1] += late
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for key, days in seen.items():
        start = max(history, min(days))
        out[key] = {
            d: (days[d][0], days[d][1]) if d in days else (0, 0) for d in days_between(start, end_day)
        }
    return out


def _gaps_window(day: str, history: str) -> tuple[str, str]:
    """The week that ends with ``day``: what ``pik gaps`` shows around it."""
    d = date.fromisoformat(day)
    return max(history, (d - timedelta(days=6)).isoformat()), (d + timedelta(days=1)).isoformat()


def _short(
    key_args: list[str],
    who: str,
    series: dict[str, tuple[int, int]],
    in_range: tuple[str, str],
    history: str,
    min_baseline: int,
    s: OverviewSettings,
    cmd: Commands,
    scope: dict[str, str | None],
) -> list[Finding]:
    out: list[Finding] = []
    totals = {d: float(a) for d, (a, _) in series.items()}
    ceiling = max(totals.values(), default=0.0)
    for day in days_between(*in_range):
        if day not in series:
            continue
        accepted, late = series[day]
        on_time = accepted - late
        if on_time >= s.min_ratio * ceiling:
            continue  # no baseline (a median of these days) can make it short
        base = with_count_noise(day_baseline(totals, day))
        if base.median < min_baseline:
            continue
        level = s.min_ratio * base.median
        if on_time >= level or not base.below(on_time, s.mad_k):
            continue
        start, end = _gaps_window(day, history)
        next_cmd = cmd(
            "gaps", *key_args, "--start", start, "--end", end, "--grace", duration_option(s.grace_ms)
        )
        grace = duration(s.grace_ms)
        evidence = {
            "events": accepted,
            "on_time": on_time,
            "late": late,
            "baseline_per_day": base.median,
            "baseline_spread": round(base.spread, 2),
            "baseline_days": base.peers,
            "same_weekday": base.weekday,
            "grace_ms": s.grace_ms,
        }
        usual = f"a usual {base.median:g}" + (" on that weekday" if base.weekday else "")
        if accepted >= level:
            if 2 * late < base.median - on_time:
                continue  # a few late events do not make it a late day; nor is it missing
            out.append(
                Finding(
                    kind=FindingKind.LATE_DAY,
                    severity=round(35 + 30 * late / max(1, accepted), 1),
                    day=day,
                    summary=(
                        f"{who} on {day}: only {on_time} events arrived on time against {usual}; "
                        f"{late} more arrived after the day ended (+{grace} grace), filling it to {accepted}."
                    ),
                    evidence=evidence,
                    next=next_cmd,
                    **scope,
                )
            )
            continue
        missing = "no events at all" if accepted == 0 else f"{accepted} events ({accepted / base.median:.0%})"
        tail = f"; {late} of them arrived late" if late else ", and none arrived late"
        out.append(
            Finding(
                kind=FindingKind.MISSING_DAY,
                severity=round(50 + 45 * (1 - min(1.0, accepted / base.median)), 1),
                day=day,
                summary=f"{who} on {day}: {missing} against {usual}{tail}.",
                evidence=evidence,
                next=next_cmd,
                **scope,
            )
        )
    return out


def series_short_days(
    hours: list[HourRollup], history: str, in_range: tuple[str, str], s: OverviewSettings, cmd: Commands
) -> list[Finding]:
    """``missing_day`` and ``late_day`` of each source/type over the days of ``in_range``."""
    names: dict[str, tuple[str, str]] = {}
    rows = []
    for h in hours:
        key = f"{h.source}\x00{h.event_type}"
        names[key] = (h.source, h.event_type)
        rows.append((key, h.day, h.accepted, h.late))
    out: list[Finding] = []
    for key, series in sorted(_daily(rows, history, in_range[1]).items()):
        source, event_type = names[key]
        out += _short(
            ["--source", source, "--type", event_type],
            f"{source}/{event_type}",
            series,
            in_range,
            history,
            s.min_baseline,
            s,
            cmd,
            {"source": source, "event_type": event_type},
        )
    return out


def entity_short_days(
    counts: list[EntityDayCount],
    history: str,
    in_range: tuple[str, str],
    explained_days: set[str],
    s: OverviewSettings,
    cmd: Commands,
) -> list[Finding]:
    """``missing_day`` and ``late_day`` of each entity, except on ``explained_days`` (a whole source/type
    was short that day: its entities are short with it, and that finding says so once)."""
    # An entity whose busiest day is below the floor can have no baseline above it: left out early (most
    # entities of a large workspace are such).
    busiest: dict[str, int] = defaultdict(int)
    for c in counts:
        busiest[c.entity_id] = max(busiest[c.entity_id], c.accepted)
    rows = (
        (c.entity_id, c.day, c.accepted, c.late)
        for c in counts
        if busiest[c.entity_id] >= s.entity_min_baseline
    )
    out: list[Finding] = []
    for entity, series in sorted(_daily(rows, history, in_range[1]).items()):
        found = _short(
            ["--entity", entity],
            f"entity {entity}",
            series,
            in_range,
            history,
            s.entity_min_baseline,
            s,
            cmd,
            {"entity_id": entity},
        )
        out += [f for f in found if f.day not in explained_days]
    return out


def skew_findings(
    hours: list[HourRollup],
    entities: list[EntityDayCount],
    in_range: tuple[str, str],
    s: OverviewSettings,
    cmd: Commands,
) -> list[Finding]:
    """``clock_skew``: entities most of whose events of a day carry a producer time ahead of the ingest
    time, and source/types with such events beyond those entities'."""
    out: list[Finding] = []
    by_day: dict[str, int] = defaultdict(int)
    for c in entities:
        if not (in_range[0] <= c.day < in_range[1]):
            continue
        if c.skewed < s.skew_min or c.skewed < ENTITY_SKEW_SHARE * c.accepted:
            continue
        by_day[c.day] += c.skewed
        end = (date.fromisoformat(c.day) + timedelta(days=1)).isoformat()
        out.append(
            Finding(
                kind=FindingKind.CLOCK_SKEW,
                severity=round(20 + 30 * c.skewed / max(1, c.accepted), 1),
                entity_id=c.entity_id,
                day=c.day,
                summary=(
                    f"entity {c.entity_id} on {c.day}: {c.skewed} of {c.accepted} events carry an event time "
                    "after their ingest time, so its producer's clock runs ahead (their lag is stored as 0)."
                ),
                evidence={"skewed": c.skewed, "events": c.accepted},
                next=cmd("events", "--entity", c.entity_id, "--start", c.day, "--end", end),
            )
        )
    series: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for h in hours:
        cell = series[(h.source, h.event_type, h.day)]
        cell[0] += h.skewed
        cell[1] += h.accepted
    for (source, event_type, day), (skewed, accepted) in sorted(series.items()):
        if not (in_range[0] <= day < in_range[1]):
            continue
        # Skew that the entity findings of the day do not account for (they may belong to other sources).
        rest = skewed - by_day.get(day, 0)
        if rest < s.skew_min:
            continue
        out.append(
            Finding(
                kind=FindingKind.CLOCK_SKEW,
                severity=round(20 + 30 * skewed / max(1, accepted), 1),
                source=source,
                event_type=event_type,
                day=day,
                summary=(
                    f"{source}/{event_type} on {day}: {skewed} of {accepted} events carry an event time "
                    "after their ingest time, so producer clocks run ahead (their lag is stored as 0)."
                ),
                evidence={"skewed": skewed, "events": accepted},
                next=cmd("lag", "--source", source, "--type", event_type, "--day", day),
            )
        )
    return out
