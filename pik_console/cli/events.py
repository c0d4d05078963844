"""``pik events``: the receipts of one entity window or one source/type/day partition, a page at a time by
cursor; ``--status REJECTED`` lists the quarantine."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.model import EventRecord, IngestStatus, Rejection
from backend.ports import EventIndex
from backend.services.receipts import receipt_label, receipt_ordinals
from backend.times import EVENT_TIME_MAX, EVENT_TIME_MIN, TimeFormatError, fmt, parse_bound, parse_day
from pik_console.cli.common import count, open_backend, print_json, table, usage
from pik_console.text import preview, safe


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "events",
        parents=[common],
        help="list index records of an entity window or a source/type/day partition",
        description="List receipts of one entity in [--start, --end) in event-time order, or of one "
        "--source/--type/--day partition in lag order. --status REJECTED lists the quarantine (filters "
        "optional; --start/--end then bound the receive time).",
    )
    p.add_argument("--entity", metavar="E")
    p.add_argument("--start", metavar="T", help="window start, inclusive (date or ISO date-time, UTC)")
    p.add_argument("--end", metavar="T", help="window end, exclusive")
    p.add_argument("--source", metavar="S")
    p.add_argument("--type", metavar="T", help="event type")
    p.add_argument("--day", metavar="YYYY-MM-DD")
    p.add_argument("--status", choices=[s.value for s in IngestStatus], type=str.upper)
    p.add_argument("--limit", type=count, default=50, metavar="N", help="records per page (default 50)")
    p.add_argument("--after", metavar="CURSOR", help="continue after this cursor (from the previous page)")
    p.add_argument("--desc", action="store_true", help="newest (or largest lag) first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events)


def _record_json(record: EventRecord, ordinals: dict[tuple[str, str], int]) -> dict[str, Any]:
    """A receipt as JSON, with its ordinal among its event's receipts (0 = accepted, 1 = first duplicate)
    beside the stored ``receipt`` id (on AWS a long arrival-order key)."""
    data = record.model_dump(mode="json", exclude={"delivery"})
    if record.receipt is not None:
        data["receipt_ordinal"] = ordinals.get((record.event_id, record.receipt))
    return data


def _rejection_json(rej: Rejection) -> dict[str, Any]:
    data = rej.model_dump(mode="json", exclude={"data"})
    data["preview"] = preview(rej.data, 500)
    return data


def cmd_events(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    status = IngestStatus(args.status) if args.status else None
    start, end, day = _window(args, status)
    backend = open_backend(args, create=False)
    try:
        if status is IngestStatus.REJECTED:
            shown, cursor = _rejections(backend.index, args, start, end, day, out)
        else:
            shown, cursor = _receipts(backend.index, args, status, start, end, day, out)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        return 0
    if not shown:
        out.write("(no matching records)\n")
    if cursor:
        out.write(f"more: add --after {cursor}\n")
    return 0


def _window(
    args: argparse.Namespace, status: IngestStatus | None
) -> tuple[str | None, str | None, str | None]:
    """``(start, end, day)`` of the scope the options name, as stored strings; usage errors for a scope
    that is missing, mixed or empty."""
    partition = [args.source, args.type, args.day]
    if status is not IngestStatus.REJECTED:
        if args.entity is None and not all(partition):
            raise usage(
                "choose a scope: --entity E [--day D | --start T --end T], or --source S --type T --day D"
            )
        if args.entity is not None and (args.source or args.type):
            raise usage("--entity cannot be combined with --source/--type; choose one scope")
        if args.entity is None and (args.start or args.end):
            raise usage("--start/--end go with --entity (a partition is one --day)")
        if args.entity is not None and args.day and (args.start or args.end):
            raise usage("--day cannot be combined with --start/--end (--day D is [D, D+1))")
    try:
        start = fmt(parse_bound(args.start, what="--start")) if args.start else None
        end = fmt(parse_bound(args.end, what="--end")) if args.end else None
        day = parse_day(args.day, what="--day") if args.day else None
    except TimeFormatError as exc:
        raise usage(str(exc)) from None
    if start and end and start >= end:
        raise usage(f"--start {args.start} is not before --end {args.end} (the window is [start, end))")
    if day is not None and (args.entity is not None or status is IngestStatus.REJECTED):
        # An entity's day, as `pik replay`, `aggregates` and `diff` take it: the window [D, D+1); for the
        # quarantine, the rejections received that day.
        first = parse_bound(day, what="--day")
        if args.entity is not None and status is not IngestStatus.REJECTED:
            start, end = fmt(first), fmt(first + timedelta(days=1))
        else:
            start, end = start or fmt(first), end or fmt(first + timedelta(days=1))
    return start, end, day


def _rejections(
    index: EventIndex,
    args: argparse.Namespace,
    start: str | None,
    end: str | None,
    day: str | None,
    out: IO[str],
) -> tuple[int, str | None]:
    """One page of the quarantine, printed; how many rows and the next cursor."""
    page = index.query_rejections(
        entity_id=args.entity,
        source=args.source,
        event_type=args.type,
        start=start,
        end=end,
        limit=args.limit,
        after=args.after,
        descending=args.desc,
    )
    if args.json:
        print_json({"items": [_rejection_json(r) for r in page.items], "next_cursor": page.next_cursor}, out)
        return len(page.items), page.next_cursor
    rows = [
        [
            r.received_at,
            r.rejection_id or "",
            safe(f"{r.origin}:{r.line}" if r.line is not None else r.origin, 40),
            f"{r.size:,}",
            safe(r.reason, 120),
        ]
        for r in page.items
    ]
    table(rows, ["RECEIVED", "ID", "ORIGIN", "BYTES", "REASON"], out, right=["ID", "BYTES"])
    return len(rows), page.next_cursor


def _receipts(
    index: EventIndex,
    args: argparse.Namespace,
    status: IngestStatus | None,
    start: str | None,
    end: str | None,
    day: str | None,
    out: IO[str],
) -> tuple[int, str | None]:
    """One page of an entity window (time order) or a partition (lag order), printed; how many rows and
    the next cursor."""
    if args.entity is not None:
        page = index.query_entity(
            args.entity,
            start or fmt(EVENT_TIME_MIN),
            end or fmt(EVENT_TIME_MAX),
            status=status,
            limit=args.limit,
            after=args.after,
            descending=args.desc,
        )
    else:
        page = index.query_partition(
            args.source, args.type, day or "", status=status, limit=args.limit, after=args.after,
            descending=args.desc,
        )  # fmt: skip
    ordinals = receipt_ordinals(index, page.items)
    if args.json:
        items = [_record_json(r, ordinals) for r in page.items]
        print_json({"items": items, "next_cursor": page.next_cursor}, out)
        return len(page.items), page.next_cursor
    rows = [
        [
            r.event_time,
            r.status.value + (f" {receipt_label(r, ordinals)}" if r.status is IngestStatus.DUPLICATE else ""),
            safe(r.entity_id, 32),
            f"{r.source}/{r.event_type}",
            f"{r.ingest_lag_ms:,}" + (" (skew)" if r.clock_skew else ""),
            r.ingest_time,
            r.event_id[:16],
        ]
        for r in page.items
    ]
    headers = ["EVENT TIME", "STATUS", "ENTITY", "SOURCE/TYPE", "LAG MS", "INGESTED", "EVENT ID"]
    table(rows, headers, out, right=["LAG MS"])
    return len(rows), page.next_cursor
