"""``pik replay`` (a dry run unless ``--execute``) and ``pik replays`` (the audit trail)."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.model import IngestStatus, ReplayAudit, ReplayOutcome, ReplayPlan, ReplayRequest
from backend.services.projection import delta_text, version_text
from backend.services.replay import MAX_LIMIT, ReplayRefused
from backend.services.replay_json import plan_response, result_response
from backend.services.scope import describe_scope
from backend.times import TimeFormatError, parse_day
from pik_console.cli.common import (
    READ_ONLY_HELP,
    Failure,
    actor,
    count,
    open_backend,
    plural,
    print_json,
    table,
    usage,
)
from pik_console.text import safe


def request_from_args(args: argparse.Namespace) -> ReplayRequest:
    """The replay request the options describe (usage errors for an incomplete or mixed scope)."""
    if args.entity is None and not (args.source and args.type):
        raise usage(
            "choose a scope: --entity E --start T --end T, "
            "or --source S --type T (--day D | --start D --end D)"
        )
    status = IngestStatus(args.status) if args.status else None
    common: dict[str, Any] = {
        "status": status,
        "limit": args.replay_limit,
        "include_duplicates": args.include_duplicates,
    }
    try:
        if args.entity is not None:
            if args.day:
                start = parse_day(args.day, what="--day")
                end = (date.fromisoformat(start) + timedelta(days=1)).isoformat()
                if args.start or args.end:
                    raise usage("--day cannot be combined with --start/--end")
            else:
                if not (args.start and args.end):
                    raise usage("an entity replay needs --start and --end (or --day)")
                start, end = args.start, args.end
            return ReplayRequest(
                entity_id=args.entity,
                start_time=start,
                end_time=end,
                source=args.source,
                event_type=args.type,
                **common,
            )
        if args.day:
            if args.start or args.end:
                raise usage("--day cannot be combined with --start/--end")
            first = parse_day(args.day, what="--day")
            end_day = (date.fromisoformat(first) + timedelta(days=1)).isoformat()
        else:
            if not (args.start and args.end):
                raise usage("a source/type replay needs --day D, or --start D --end D (days, end exclusive)")
            first, end_day = parse_day(args.start, what="--start"), parse_day(args.end, what="--end")
        return ReplayRequest(
            source=args.source, event_type=args.type, start_day=first, end_day=end_day, **common
        )
    except TimeFormatError as exc:
        raise usage(str(exc)) from None


# -- pik replay ----------------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not 1 <= args.replay_limit <= MAX_LIMIT:
        raise usage(f"--limit must be between 1 and {MAX_LIMIT:,}")
    if args.force and not args.execute:
        raise usage("--force goes with --execute (a dry run sends nothing)")
    if args.expect and not args.execute:
        raise usage("--expect goes with --execute")
    request = request_from_args(args)
    backend = open_backend(args, create=False)
    try:
        # Without an audit table (the original kit's stacks) a dry run is a preview: no audit record.
        unaudited = not args.execute and backend.audit is None
        service = backend.replay(preview=unaudited)
        who = actor()
        if not args.execute:
            plan = service.plan(request, actor=who)
            if args.json:
                print_json(plan_response(plan), out)
            else:
                _print_plan(plan, out, dry_run=True)
            if unaudited:
                err.write(
                    "note: this dry run has no audit record: the stack has no audit table (AUDIT_TABLE is "
                    "not set); --execute needs one (docs/aws.md, 'Adding an audit table')\n"
                )
            return 0
        show_progress = err.isatty() and not args.json

        def progress(sent: int, failed: int, total: int) -> None:
            if show_progress:
                err.write(f"\r  sent {sent:,} of {total:,} messages ({failed:,} failed)…")
                err.flush()

        try:
            result = service.execute(
                request, actor=who, force=args.force, expected_fingerprint=args.expect, on_progress=progress
            )
        except ReplayRefused as exc:
            if args.json:
                print_json({"error": str(exc), **plan_response(exc.plan), "dry_run": False}, out)
            else:
                _print_plan(exc.plan, out, dry_run=False)
            raise Failure(str(exc)) from None
        finally:
            if show_progress:
                err.write("\r\x1b[K")
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json(result_response(result), out)
    else:
        _print_result(result, out)
    if result.outcome is not ReplayOutcome.SENT:
        raise Failure(
            f"replay {result.replay_id} {result.outcome.value}: {result.failed:,} of {result.would_send:,} "
            f"messages not sent ({result.error or 'see pik replays ' + result.replay_id})"
        )
    return 0


def _unconfirmed(a: ReplayAudit) -> str:
    return (
        f"{plural(a.unconfirmed, 'send')} unconfirmed (a batch call failed as a whole and was retried): the "
        f"queue holds {a.sent:,} to {a.sent + a.unconfirmed:,} messages of this replay"
    )


def _count_lines(pairs: list[tuple[str, int]], out: IO[str]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        out.write(f"  {key:<{width}}  {value:>10,}\n")


def _print_plan(plan: ReplayPlan, out: IO[str], *, dry_run: bool) -> None:
    head = "DRY RUN" if dry_run else "NOT SENT"
    out.write(f"{head} {plan.replay_id}: nothing was sent\n")
    out.write(f"Scope: {safe(describe_scope(plan.request), 400)}\n")
    s = plan.skipped
    _count_lines(
        [
            ("scanned", plan.scanned),
            ("matched", plan.matched),
            ("would send", plan.would_send),
            ("skipped: duplicate", s.duplicate),
            ("skipped: missing raw", s.missing_raw),
            ("skipped: over limit", s.over_limit),
            ("skipped: filtered", s.filtered),
        ],
        out,
    )
    if plan.by_day:
        out.write("By event day: " + ", ".join(f"{d} {n:,}" for d, n in plan.by_day.items()) + "\n")
    if plan.would_send:
        known = (
            f" ({plan.windows_with_versions:,} already have aggregate versions)"
            if plan.windows_with_versions is not None
            else ""
        )
        out.write(
            f"Blast radius: {plural(plan.entities, 'entity', 'entities')}, "
            f"{plural(plan.windows, 'aggregate window')} (entity, day) to recompute{known}; "
            f"event times {plan.first_event_time} .. {plan.last_event_time}\n"
        )
        _print_projection(plan, out)
        out.write(f"\nFirst {len(plan.sample)} of {plan.would_send:,} messages:\n")
        table(
            [[m.event_time, safe(m.entity_id, 32), m.event_id[:16], safe(m.s3_key, 72)] for m in plan.sample],
            ["EVENT TIME", "ENTITY", "EVENT ID", "S3 KEY"],
            out,
        )
    if plan.why:
        out.write("\nNote:\n" if plan.would_send else "\nNothing would be sent:\n")
        for line in plan.why:
            out.write(f"  - {safe(line, 500)}\n")
    out.write(f"\nPlan fingerprint: {plan.fingerprint}\n")
    if dry_run and plan.would_send:
        force = " --force" if plan.needs_force else ""
        out.write(
            f"To send exactly these messages, add: --execute{force} --expect {plan.fingerprint[:16]}\n"
            "  (--expect refuses the replay if what it would send changed since this preview)\n"
        )


def _print_projection(plan: ReplayPlan, out: IO[str]) -> None:
    """The what-if: the versions a processor run would produce, window by window, with why."""
    if plan.windows_projected is None:
        return
    rest = f"; {plan.windows_not_projected:,} more not projected" if plan.windows_not_projected else ""
    out.write(
        f"\nOnce processed (projected for {plural(plan.windows_projected, 'window')} of "
        f"{plan.windows:,}{rest}; nothing was written):\n"
    )
    if not plan.projected:
        return  # the notes say why
    changing = [p for p in plan.projected if p.new_version]
    same = len(plan.projected) - len(changing)
    if not changing:
        out.write(f"  no new version: the {plural(same, 'metric')} of these windows stay as they are\n")
        return
    rows = [
        [
            safe(p.entity_id, 32),
            p.day,
            safe(p.metric, 32),
            version_text(p.current_version, p.current_value),
            version_text(p.projected_version, p.projected_value),
            delta_text(p),
            safe(p.reason, 300),
        ]
        for p in changing
    ]
    table(rows, ["ENTITY", "DAY", "METRIC", "NOW", "PROJECTED", "DELTA", "WHY"], out, right=["DELTA"])
    if same:
        out.write(
            f"  ({plural(same, 'other metric')} of these windows stay as they are: --json lists them)\n"
        )


def _print_result(a: ReplayAudit, out: IO[str]) -> None:
    out.write(
        f"REPLAY {a.replay_id} {a.outcome.value}: sent {a.sent:,} of {a.would_send:,} messages, "
        f"{a.failed:,} failed\n"
    )
    if a.unconfirmed:
        out.write(f"{_unconfirmed(a)}\n")
    out.write(f"Scope: {safe(describe_scope(a.request), 400)}\n")
    out.write(
        f"Scanned {a.scanned:,}, matched {a.matched:,}; skipped {a.skipped.duplicate:,} duplicate, "
        f"{a.skipped.missing_raw:,} missing raw, {a.skipped.over_limit:,} over limit, "
        f"{a.skipped.filtered:,} filtered\n"
    )
    if a.error:
        out.write(f"Last error: {safe(a.error, 500)}\n")
    if a.sent:
        out.write(
            f"Next: `pik process` recomputes the {plural(a.windows, 'aggregate window')} these messages "
            "touch; "
            f"`pik replays {a.replay_id}` shows this record.\n"
        )


# -- pik replays ---------------------------------------------------------------------------------------------


def cmd_replays(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    backend = open_backend(args, create=False)
    try:
        audit = backend.audit_log()
        if args.replay_id:
            record = audit.get(args.replay_id)
            if record is None:
                raise Failure(f"no replay {args.replay_id!r} in the audit trail")
            if args.json:
                print_json(record.model_dump(mode="json"), out)
            else:
                _print_record(record, out)
            return 0
        page = audit.query(limit=args.limit, after=args.after)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json(
            {"items": [r.model_dump(mode="json") for r in page.items], "next_cursor": page.next_cursor}, out
        )
        return 0
    rows = [
        [
            r.started_at,
            r.replay_id,
            r.outcome.value,
            safe(r.actor, 20),
            f"{r.scanned:,}",
            f"{r.would_send:,}",
            f"{r.sent:,}",
            f"{r.failed:,}",
            safe(describe_scope(r.request), 70),
        ]
        for r in page.items
    ]
    table(
        rows,
        ["STARTED", "REPLAY ID", "OUTCOME", "ACTOR", "SCANNED", "PLANNED", "SENT", "FAILED", "SCOPE"],
        out,
        right=["SCANNED", "PLANNED", "SENT", "FAILED"],
    )
    if not rows:
        out.write("(no replays yet: preview one with `pik replay`)\n")
    if page.next_cursor:
        out.write(f"more: add --after {page.next_cursor}\n")
    return 0


def _print_record(r: ReplayAudit, out: IO[str]) -> None:
    out.write(f"Replay {r.replay_id}: {r.outcome.value}{' (dry run)' if r.dry_run else ''}\n")
    out.write(f"  by        {safe(r.actor)}\n")
    out.write(f"  started   {r.started_at}\n")
    out.write(f"  finished  {r.finished_at or '-'}\n")
    out.write(f"  scope     {safe(describe_scope(r.request), 400)}\n")
    out.write(
        f"  counts    scanned {r.scanned:,}, matched {r.matched:,}, planned {r.would_send:,}, "
        f"sent {r.sent:,}, failed {r.failed:,}\n"
    )
    if r.unconfirmed:
        out.write(f"            {_unconfirmed(r)}\n")
    s = r.skipped
    out.write(
        f"  skipped   {s.duplicate:,} duplicate, {s.missing_raw:,} missing raw, {s.over_limit:,} over limit, "
        f"{s.filtered:,} filtered\n"
    )
    known = "" if r.windows_with_versions is None else f" ({r.windows_with_versions:,} had versions)"
    out.write(
        f"  touches   {plural(r.entities, 'entity', 'entities')}, "
        f"{plural(r.windows, 'aggregate window')}{known}\n"
    )
    if r.forced:
        out.write("  forced    yes (over the size guard)\n")
    out.write(f"  plan      {r.fingerprint or '-'}\n")
    if r.error:
        out.write(f"  error     {safe(r.error, 500)}\n")


# -- registration ------------------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "replay",
        parents=[common],
        help="preview (dry run) or --execute a replay of an entity window or a source/type over days",
        description="Re-emit index receipts as replay messages for the processor. A dry run unless "
        "--execute: the preview says what would be sent, what is skipped and why, and what it touches. "
        "Scope: --entity E with --start/--end (date or ISO date-time, UTC, end exclusive) or --day; or "
        "--source S --type T with --day D or --start D --end D (event days, end exclusive). With --entity, "
        "--source and --type filter.",
    )
    p.add_argument("--entity", metavar="E")
    p.add_argument("--start", metavar="T")
    p.add_argument("--end", metavar="T")
    p.add_argument("--day", metavar="YYYY-MM-DD")
    p.add_argument("--source", metavar="S")
    p.add_argument("--type", metavar="T", help="event type")
    p.add_argument(
        "--status", choices=[IngestStatus.ACCEPTED.value, IngestStatus.DUPLICATE.value], type=str.upper
    )
    p.add_argument(
        "--limit", dest="replay_limit", type=count, default=500, metavar="N", help="messages (default 500)"
    )
    p.add_argument(
        "--include-duplicates", action="store_true", help="one message per receipt, duplicates included"
    )
    p.add_argument("--execute", action="store_true", help="send the messages (default: a dry run)")
    p.add_argument("--force", action="store_true", help="send even above the size guard (settings.toml)")
    p.add_argument(
        "--expect",
        metavar="FINGERPRINT",
        help="send only if the plan is still the previewed one (its fingerprint)",
    )
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP + " (a dry run is allowed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "replays", parents=[common], help="the replay audit trail (newest first), or one replay's record"
    )
    p.add_argument("replay_id", nargs="?", metavar="REPLAY_ID")
    p.add_argument("--limit", type=count, default=50, metavar="N", help="records per page (default 50)")
    p.add_argument("--after", metavar="CURSOR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replays)
