"""``pik lag`` and ``pik gaps``: how late a partition's data arrived, and which days are short and why."""

from __future__ import annotations

import argparse
import shlex
from datetime import date, timedelta
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.services.gaps import DayStatus, GapReport
from backend.services.lag import LagReport
from backend.times import TimeFormatError, human_ms, parse_day, parse_duration
from pik_console.cli.common import count, open_backend, print_json, table, usage
from pik_console.text import safe


def _duration(text: str, what: str) -> int:
    try:
        return parse_duration(text, what=what)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None


def _day(text: str, what: str) -> str:
    try:
        return parse_day(text, what=what)
    except TimeFormatError as exc:
        raise usage(str(exc)) from None


def _ms(value: int | None) -> str:
    return "-" if value is None else human_ms(value)


# -- pik lag -----------------------------------------------------------------------------------------------


def cmd_lag(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    day = _day(args.day, "--day")
    late_ms = _duration(args.late, "--late")
    if not 0 <= args.top <= 1000:
        raise usage("--top must be between 0 and 1000")
    backend = open_backend(args, create=False)
    try:
        service = backend.lag()
        report = service.lag(args.source, args.type, day, late_ms=late_ms, top=args.top)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json(report.model_dump(mode="json"), out)
        return 0
    _print_lag(report, out)
    return 0


def _print_lag(r: LagReport, out: IO[str]) -> None:
    where = f"{safe(r.source)}/{safe(r.event_type)} on {r.day}"
    if not r.count:
        extra = f" ({r.duplicates:,} duplicate receipts)" if r.duplicates else ""
        out.write(f"No accepted events for {where}{extra}.\n")
        return
    dup = f"; {r.duplicates:,} duplicate receipts not counted" if r.duplicates else ""
    out.write(f"Ingest lag of {where}: {r.count:,} accepted events{dup}\n")
    for label, value in (("p50", r.p50_ms), ("p90", r.p90_ms), ("p99", r.p99_ms), ("max", r.max_ms)):
        out.write(f"  {label:<5} {_ms(value):>10}  ({value:,} ms)\n")
    share = 100 * r.late / r.count
    out.write(f"  late (lag >= {human_ms(r.late_threshold_ms)}): {r.late:,} of {r.count:,} ({share:.1f}%)\n")
    if r.clock_skew:
        out.write(
            f"  clock skew: {r.clock_skew:,} events claim a time after their arrival (lag stored as 0)\n"
        )
    out.write("\nBy event hour (UTC):\n")
    table(
        [[h.hour, f"{h.count:,}", f"{h.late:,}", _ms(h.p50_ms), _ms(h.max_ms)] for h in r.hours],
        ["HOUR", "EVENTS", "LATE", "P50 LAG", "MAX LAG"],
        out,
        right=["EVENTS", "LATE", "P50 LAG", "MAX LAG"],
    )
    if r.largest:
        out.write(f"\nLargest lag first ({len(r.largest)} of {r.count:,}):\n")
        table(
            [
                [
                    _ms(e.ingest_lag_ms),
                    e.event_time,
                    e.ingest_time,
                    safe(e.entity_id, 32),
                    e.event_id[:16],
                ]
                for e in r.largest
            ],
            ["LAG", "EVENT TIME", "INGESTED", "ENTITY", "EVENT ID"],
            out,
            right=["LAG"],
        )


# -- pik gaps ----------------------------------------------------------------------------------------------


def cmd_gaps(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    partition = [args.source, args.type]
    if args.entity is None and not all(partition):
        raise usage("choose a scope: --entity E, or --source S --type T")
    if args.entity is not None and any(partition):
        raise usage("--entity cannot be combined with --source/--type; choose one scope")
    first = _day(args.start, "--start")
    end = _day(args.end, "--end")
    grace = _duration(args.grace, "--grace")
    backend = open_backend(args, create=False)
    try:
        service = backend.gaps()
        report = service.gaps(
            first,
            end,
            entity_id=args.entity,
            source=args.source,
            event_type=args.type,
            grace_ms=grace,
            min_ratio=args.min_ratio,
            expected=args.expected,
        )
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json(report.model_dump(mode="json"), out)
        return 0
    _print_gaps(report, out)
    return 0


def _days_text(days: list[str]) -> str:
    shown = ", ".join(days[:10])
    return shown + (f" and {len(days) - 10} more" if len(days) > 10 else "")


def _print_gaps(r: GapReport, out: IO[str]) -> None:
    scope = f"entity {safe(r.entity_id)}" if r.entity_id is not None else f"{r.source}/{r.event_type}"
    basis = "given" if r.expected_given else "the median day"
    out.write(
        f"Events per day of {scope}, [{r.first_day}, {r.end_day}); expected {r.expected:,.1f} a day "
        f"({basis}); late = ingested after the end of the day + {human_ms(r.grace_ms)}\n"
    )
    rows = []
    for g in r.days:
        note = g.status.value
        if g.late and g.first_late_ingest and g.last_late_ingest:
            note += f" (late ones ingested {g.first_late_ingest[:16]} .. {g.last_late_ingest[:16]})"
        rows.append([g.day, f"{g.events:,}", f"{g.on_time:,}", f"{g.late:,}", f"{g.duplicates:,}", note])
    table(
        rows,
        ["DAY", "EVENTS", "ON TIME", "LATE", "DUPLICATES", "STATUS"],
        out,
        right=["EVENTS", "ON TIME", "LATE", "DUPLICATES"],
    )
    late, never = r.arrived_late, r.never_arrived
    out.write("\n")
    if not late and not never:
        out.write("No under-filled days.\n")
        return
    if never:
        missing = f" ({len(r.missing_days)} without a single event)" if r.missing_days else ""
        out.write(f"Never arrived: {len(never)} day(s){missing}: {_days_text(never)}\n")
    if late:
        out.write(f"Arrived late: {len(late)} day(s): {_days_text(late)}\n")
        sample = next(g for g in r.days if g.status is DayStatus.ARRIVED_LATE)
        following = (date.fromisoformat(sample.day) + timedelta(days=1)).isoformat()
        if r.entity_id is not None:
            scope_args = f"--entity {shlex.quote(safe(r.entity_id))} --start {sample.day} --end {following}"
        else:
            scope_args = f"--source {r.source} --type {r.event_type} --day {sample.day}"
        out.write(
            f"  e.g. {sample.day}: {sample.on_time:,} on time, {sample.late:,} late. To recompute its "
            f"aggregates with the late events, preview a replay:\n    pik replay {scope_args}\n"
        )


# -- registration ------------------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lag`` and ``gaps`` to the ``pik`` sub-command parser."""
    p = sub.add_parser(
        "lag",
        parents=[common],
        help="lag statistics and the largest-lag events of a source/type/day",
        description="Ingest lag of the accepted events of one --source/--type/--day partition: "
        "percentiles (nearest rank), events over a late threshold, an hourly histogram by event hour, "
        "and the largest-lag events (one query on the lag index, largest first).",
    )
    p.add_argument("--source", metavar="S", required=True)
    p.add_argument("--type", metavar="T", required=True, help="event type")
    p.add_argument("--day", metavar="YYYY-MM-DD", required=True, help="event day (UTC)")
    p.add_argument("--late", metavar="DURATION", default="1h", help="late threshold (default 1h)")
    p.add_argument("--top", type=count, default=10, metavar="N", help="largest-lag events (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lag)

    p = sub.add_parser(
        "gaps",
        parents=[common],
        help="events per day over a range; missing days, split into never arrived and arrived late",
        description="Events per day of an --entity, or of a --source/--type, over [--start, --end). A day "
        "is under-filled when fewer than --min-ratio x the expected daily count arrived on time (before "
        "the end of the day plus --grace); it 'arrived late' if late arrivals fill it, else it 'never "
        "arrived'. The expected count is the median day unless --expected is given.",
    )
    p.add_argument("--entity", metavar="E")
    p.add_argument("--source", metavar="S")
    p.add_argument("--type", metavar="T", help="event type")
    p.add_argument("--start", metavar="YYYY-MM-DD", required=True, help="first day (inclusive)")
    p.add_argument("--end", metavar="YYYY-MM-DD", required=True, help="end day (exclusive)")
    p.add_argument("--grace", metavar="DURATION", default="1h", help="grace after the day (default 1h)")
    p.add_argument("--min-ratio", type=float, default=0.5, metavar="R", help="default 0.5")
    p.add_argument("--expected", type=float, metavar="N", help="expected events per day")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gaps)
