"""The ``pik`` command line. Exit codes: 0 ok, 1 failure, 2 usage error.

Every command works on a local workspace folder (``--workspace DIR``, ``PIK_WORKSPACE``, default ``./.pik``).
Every read command takes ``--json``. Errors are one line on stderr naming what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, NoReturn

from backend.errors import InvalidRequest, KitError, ReadOnlyError
from backend.model import MAX_BODY_BYTES, EventRecord, IngestStatus, Rejection
from backend.services.ingest import QUARANTINE_MAX_BYTES, IngestService, Received, Resumed
from backend.times import EVENT_TIME_MAX, EVENT_TIME_MIN, TimeFormatError, fmt, parse_bound, parse_day
from pik_console.text import preview, safe

DEFAULT_WORKSPACE = ".pik"
READ_ONLY_HELP = "refuse to write anything (also PIK_READ_ONLY=1): the command fails with exit 1"
DEFAULT_DEMO_WORKSPACE = ".pik-demo"
REJECTIONS_IN_JSON = 1000
REJECTIONS_IN_TEXT = 20


class Failure(Exception):
    """A failure to report on stderr with exit code 1."""


# -- helpers ----------------------------------------------------------------------------------------------


def _workspace(args: argparse.Namespace, default: str = DEFAULT_WORKSPACE) -> Path:
    chosen = args.workspace or os.environ.get("PIK_WORKSPACE") or default
    return Path(chosen)


def _open_store(path: Path, *, create: bool) -> Any:
    # Imported here: the store module pulls in sqlite3, which `pik --help` does not need.
    from backend.adapters.local.store import LocalStore

    return LocalStore(path, create=create)


def aws_settings(args: argparse.Namespace) -> Any:
    """AWS settings from the options, then the stack's outputs (``--stack``), then the environment."""
    from backend.config import AwsSettings
    from backend.runtime import stack_settings

    given = {
        k: v
        for k, v in {
            "region": getattr(args, "region", None),
            "profile": getattr(args, "profile", None),
            "endpoint_url": getattr(args, "endpoint_url", None),
        }.items()
        if v
    }
    settings = AwsSettings(**given)
    if settings.endpoint_url and not settings.region:
        # An AWS-compatible endpoint (moto, LocalStack) still needs a region to sign with; use the
        # profile's, else the one `pik aws init` assumes.
        import boto3

        from pik_console.aws_cmd import DEFAULT_ENDPOINT_REGION

        try:
            region = boto3.session.Session(profile_name=settings.profile).region_name
        except Exception:  # an unknown profile is reported when the backend opens
            region = None
        settings = settings.model_copy(update={"region": region or DEFAULT_ENDPOINT_REGION})
    if getattr(args, "stack", None):
        settings = stack_settings(settings, args.stack)
    return settings


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def read_only_requested(args: argparse.Namespace) -> bool:
    """``--read-only``, or ``PIK_READ_ONLY`` set to 1/true/yes/on (0/false/no/off or unset: not)."""
    if getattr(args, "read_only", False):
        return True
    value = os.environ.get("PIK_READ_ONLY", "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise _usage(f"PIK_READ_ONLY must be true or false (1/0, yes/no, on/off), got {safe(value, 40)!r}")
    return value in _TRUE


def open_backend(args: argparse.Namespace, *, create: bool, default: str = DEFAULT_WORKSPACE) -> Any:
    """The backend the options name: a local workspace (default) or an AWS stack (``--backend aws``),
    read-only with ``--read-only`` or ``PIK_READ_ONLY`` (the services then refuse every write).

    Returns a :class:`backend.runtime.Backend`; the caller closes it.
    """
    from backend.runtime import open_aws, open_local

    read_only = read_only_requested(args)
    if _backend_name(args) == "aws":
        if args.workspace:
            raise _usage("--workspace is for the local backend; with --backend aws name a --stack")
        settings = aws_settings(args)
        missing = settings.missing("raw_bucket", "events_table", "dedupe_table")
        if missing:
            raise _usage(
                "--backend aws needs --stack NAME or the environment variables " + ", ".join(missing)
            )
        return open_aws(settings, read_only=read_only)
    for option in ("stack", "endpoint_url", "region", "profile"):
        if getattr(args, option, None):
            flag = "--" + option.replace("_", "-")
            raise _usage(f"{flag} is for the AWS backend; add --backend aws")
    return open_local(_workspace(args, default), create=create, read_only=read_only)


def _backend_name(args: argparse.Namespace) -> str:
    return str(getattr(args, "backend", None) or os.environ.get("PIK_BACKEND") or "local")


def _print_json(data: Any, out: IO[str]) -> None:
    json.dump(data, out, ensure_ascii=False, indent=None, separators=(",", ":"))
    out.write("\n")


def _int(text: str) -> int:
    return int(text.replace(",", "").replace("_", ""))


# -- pik ingest ---------------------------------------------------------------------------------------------


def read_lines(stream: IO[bytes], origin: str, limit: int = MAX_BODY_BYTES) -> Iterator[Received]:
    """JSON Lines from ``stream`` as requests, one at a time: memory stays bounded whatever the file size.

    A line longer than ``limit`` is not held: its prefix, size and sha256 are passed on so that it is
    rejected for its size and quarantined (bounded), and reading continues with the next line.
    """
    number = 0
    while True:
        line = stream.readline(limit + 2)
        if not line:
            return
        number += 1
        if line.endswith(b"\n") or len(line) <= limit:
            body = line[:-1] if line.endswith(b"\n") else line
            if body.endswith(b"\r"):
                body = body[:-1]
            if len(body) <= limit:
                yield Received(body, origin, number)
                continue
        # Too long: stream the rest of the line through a hash, keep only the quarantine prefix.
        digest = hashlib.sha256()
        prefix = line[:QUARANTINE_MAX_BYTES]
        size = 0
        while True:
            chunk = line[:-1] if line.endswith(b"\n") else line
            digest.update(chunk)
            size += len(chunk)
            if line.endswith(b"\n"):
                break
            line = stream.readline(1 << 20)
            if not line:
                break
        yield Received(prefix, origin, number, size=size, sha256=digest.hexdigest())


@contextlib.contextmanager
def _bulk_gc() -> Iterator[None]:
    """Fewer cyclic-GC passes while a bulk ingest allocates millions of short-lived objects.

    Reference counting frees them; the cyclic collector only rescans the growing heap (with its
    defaults it costs ~18% of ingest time on 200k lines). It still runs, less often, and the previous
    thresholds are restored afterwards.
    """
    previous = gc.get_threshold()
    gc.freeze()  # what is alive now (modules, the store) need not be scanned again
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def cmd_ingest(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    source_name = args.file
    if source_name == "-":
        stream: IO[bytes] = sys.stdin.buffer
        origin = "stdin"
    else:
        path = Path(source_name)
        if path.is_dir():
            raise Failure(f"cannot read {source_name}: it is a folder, not a JSON Lines file")
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise Failure(f"cannot read {source_name}: {exc.strerror or exc}") from None
        origin = f"file:{path.name}"
    backend = open_backend(args, create=True)
    service = IngestService(backend.raw, backend.index, read_only=backend.read_only)
    # A file is resumed: lines an earlier run of it stored are skipped. stdin is not (two pipes are two
    # inputs, and a line at the same position of another pipe is a real redelivery).
    ledger = backend.ledger if origin != "stdin" and not args.again else None
    counts = {IngestStatus.ACCEPTED: 0, IngestStatus.DUPLICATE: 0, IngestStatus.REJECTED: 0}
    rejections: list[dict[str, Any]] = []
    skewed = 0
    lines = 0
    skipped = 0
    started = time.perf_counter()
    show_progress = err.isatty() and not args.json
    rerun = (
        "running the same command again resumes after the last stored line"
        if ledger is not None
        else "running the same command again is safe (stored events come back as DUPLICATE receipts)"
    )
    try:
        with stream, _bulk_gc():
            requests = read_lines(stream, origin)
            if ledger is not None:
                batches: Iterator[Resumed] = service.resume_stream(requests, ledger, args.batch_size)
            else:
                batches = (Resumed(r, 0) for r in service.ingest_stream(requests, args.batch_size))
            for batch in batches:
                for result in batch.results:
                    counts[result.status] += 1
                    if result.status is IngestStatus.REJECTED and len(rejections) < REJECTIONS_IN_JSON:
                        rejections.append({"line": result.line, "reason": result.reason})
                    skewed += result.clock_skew
                lines += len(batch.results) + batch.skipped
                skipped += batch.skipped
                if show_progress:
                    err.write(f"\r  {lines:,} lines ingested…")
                    err.flush()
    except ReadOnlyError:
        raise  # nothing was stored: no advice about re-running
    except OSError as exc:
        raise Failure(
            f"reading {source_name} failed after line {lines:,}: {exc.strerror or exc}; the first {lines:,} "
            f"lines are stored, and {rerun}"
        ) from None
    except KitError as exc:
        raise Failure(f"{exc} — the first {lines:,} lines are stored; {rerun}") from None
    except KeyboardInterrupt:
        err.write(
            f"\npik ingest: interrupted; the first {lines:,} lines are stored (the batch in progress was "
            f"not), and {rerun}\n"
        )
        raise
    finally:
        backend.close()
        if show_progress:
            err.write("\r\x1b[K")
    seconds = time.perf_counter() - started
    summary = {
        "accepted": counts[IngestStatus.ACCEPTED],
        "duplicate": counts[IngestStatus.DUPLICATE],
        "rejected": counts[IngestStatus.REJECTED],
        "already_ingested": skipped,
        "rejections": rejections,
        "rejections_truncated": counts[IngestStatus.REJECTED] > len(rejections),
        "clock_skew": skewed,
        "lines": lines,
        "input": source_name,
        "workspace" if backend.name == "local" else "backend": backend.location,
        "seconds": round(seconds, 3),
        "lines_per_second": round(lines / seconds) if seconds > 0 else None,
    }
    if args.json:
        _print_json(summary, out)
        return 0
    rate = f" ({summary['lines_per_second']:,} lines/s)" if summary["lines_per_second"] else ""
    out.write(
        f"Read {lines:,} lines from {safe(source_name)} into {backend.location} in {seconds:.1f} s{rate}\n"
    )
    out.write(f"  accepted   {summary['accepted']:>12,}\n")
    out.write(f"  duplicate  {summary['duplicate']:>12,}\n")
    out.write(f"  rejected   {summary['rejected']:>12,}\n")
    if skipped:
        out.write(
            f"  already ingested {skipped:>6,}  (stored by an earlier run of this file and skipped; "
            "--again ingests them as new deliveries)\n"
        )
    if skewed:
        out.write(
            f"  ({skewed:,} events have event times ahead of their ingest time: "
            "clock skew, lag stored as 0)\n"
        )
    if rejections:
        shown = rejections[:REJECTIONS_IN_TEXT]
        out.write(
            f"Rejected lines (first {len(shown)} of {summary['rejected']:,}; all are quarantined, "
            "see `pik events --status REJECTED`):\n"
        )
        for item in shown:
            out.write(f"  line {item['line']}: {safe(item['reason'], 200)}\n")
    return 0


# -- pik events ---------------------------------------------------------------------------------------------


def _record_json(record: EventRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _rejection_json(rej: Rejection) -> dict[str, Any]:
    data = rej.model_dump(mode="json", exclude={"data"})
    data["preview"] = preview(rej.data, 500)
    return data


def _table(
    rows: Sequence[Sequence[str]], headers: Sequence[str], out: IO[str], right: Sequence[str] = ()
) -> None:
    """A plain-text table; the columns named in ``right`` (numbers) are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    out.write(line(headers) + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def cmd_events(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    status = IngestStatus(args.status) if args.status else None
    partition = [args.source, args.type, args.day]
    if status is not IngestStatus.REJECTED:
        if args.entity is None and not all(partition):
            raise _usage("choose a scope: --entity E [--start T --end T], or --source S --type T --day D")
        if args.entity is not None and any(partition):
            raise _usage("--entity cannot be combined with --source/--type/--day; choose one scope")
        if args.entity is None and (args.start or args.end):
            raise _usage("--start/--end go with --entity (a partition is one --day)")
    try:
        start = fmt(parse_bound(args.start, what="--start")) if args.start else None
        end = fmt(parse_bound(args.end, what="--end")) if args.end else None
        day = parse_day(args.day, what="--day") if args.day else None
    except TimeFormatError as exc:
        raise _usage(str(exc)) from None
    if start and end and start >= end:
        raise _usage(f"--start {args.start} is not before --end {args.end} (the window is [start, end))")
    backend = open_backend(args, create=False)
    store = backend.index
    try:
        if status is IngestStatus.REJECTED:
            if day is not None:  # the rejections received that day
                first = parse_bound(day, what="--day")
                start = start or fmt(first)
                end = end or fmt(first + timedelta(days=1))
            rpage = store.query_rejections(
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
                _print_json(
                    {"items": [_rejection_json(r) for r in rpage.items], "next_cursor": rpage.next_cursor},
                    out,
                )
                return 0
            rows = [
                [
                    r.received_at,
                    r.rejection_id or "",
                    safe(f"{r.origin}:{r.line}" if r.line is not None else r.origin, 40),
                    f"{r.size:,}",
                    safe(r.reason, 120),
                ]
                for r in rpage.items
            ]
            _table(rows, ["RECEIVED", "ID", "ORIGIN", "BYTES", "REASON"], out, right=["ID", "BYTES"])
            cursor = rpage.next_cursor
        else:
            if args.entity is not None:
                page = store.query_entity(
                    args.entity,
                    start or fmt(EVENT_TIME_MIN),
                    end or fmt(EVENT_TIME_MAX),
                    status=status,
                    limit=args.limit,
                    after=args.after,
                    descending=args.desc,
                )
            else:
                page = store.query_partition(
                    args.source,
                    args.type,
                    day,
                    status=status,
                    limit=args.limit,
                    after=args.after,
                    descending=args.desc,
                )
            if args.json:
                _print_json(
                    {"items": [_record_json(r) for r in page.items], "next_cursor": page.next_cursor}, out
                )
                return 0
            rows = [
                [
                    r.event_time,
                    r.status.value + (f" #{r.receipt}" if r.status is IngestStatus.DUPLICATE else ""),
                    safe(r.entity_id, 32),
                    f"{r.source}/{r.event_type}",
                    f"{r.ingest_lag_ms:,}" + (" (skew)" if r.clock_skew else ""),
                    r.ingest_time,
                    r.event_id[:16],
                ]
                for r in page.items
            ]
            headers = ["EVENT TIME", "STATUS", "ENTITY", "SOURCE/TYPE", "LAG MS", "INGESTED", "EVENT ID"]
            _table(rows, headers, out, right=["LAG MS"])
            cursor = page.next_cursor
    except InvalidRequest as exc:
        raise _usage(str(exc)) from None
    finally:
        backend.close()
    if not rows:
        out.write("(no matching records)\n")
    if cursor:
        out.write(f"more: add --after {cursor}\n")
    return 0


# -- pik demo -----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from backend.adapters.local.store import DB_NAME
    from backend.demo import DEMO_VERSION, build_demo, demo_state

    path = _workspace(args, DEFAULT_DEMO_WORKSPACE) if args.workspace else Path(DEFAULT_DEMO_WORKSPACE)
    read_only = read_only_requested(args)
    if read_only and not (path / DB_NAME).exists():
        raise Failure(
            f"the demo workspace {path} is not built yet, and building it writes: "
            "refused in read-only mode (PIK_READ_ONLY)"
        )
    store = _open_store(path, create=not read_only)
    try:
        state = demo_state(store)
        if state == "foreign":
            raise Failure(
                f"{store.path} holds a workspace that is not the demo; choose another folder with --workspace"
            )
        if state == "incomplete":
            raise Failure(
                f"the demo workspace {store.path} is incomplete (an interrupted build?) or from another "
                f"demo version; remove that folder and run `pik demo` again"
            )
        if state == "missing":
            if read_only:
                raise Failure(
                    f"the demo workspace {store.path} is not built yet, and building it writes: "
                    "refused in read-only mode (PIK_READ_ONLY)"
                )
            if not args.json:
                out.write(f"Building the demo workspace in {store.path} (demo v{DEMO_VERSION})…\n")
                out.flush()
            started = time.perf_counter()
            build_demo(store)
            built = time.perf_counter() - started
        else:
            built = None
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        _print_json(
            {
                "workspace": str(store.path),
                "built_seconds": None if built is None else round(built, 2),
                "accepted": stats.accepted,
                "duplicate": stats.duplicate,
                "rejected": stats.rejected,
                "entities": stats.entities,
                "first_event_time": stats.first_event_time,
                "last_event_time": stats.last_event_time,
                "partitions": [
                    {
                        "source": p.source,
                        "event_type": p.event_type,
                        "accepted": p.accepted,
                        "duplicate": p.duplicate,
                    }
                    for p in stats.partitions
                ],
            },
            out,
        )
        return 0
    from backend.demo import STORY

    if built is not None:
        out.write(f"Built in {built:.1f} s through the real ingest path.\n")
    else:
        out.write(f"Reusing the demo workspace in {store.path}.\n")
    out.write(
        f"\nThe workspace holds {stats.accepted:,} accepted events, "
        f"{stats.duplicate:,} duplicate receipts and "
        f"{stats.rejected:,} quarantined rejections\nfor {stats.entities:,} entities, event times "
        f"{stats.first_event_time} .. {stats.last_event_time}.\n\n"
    )
    _table(
        [[p.source, p.event_type, f"{p.accepted:,}", f"{p.duplicate:,}"] for p in stats.partitions],
        ["SOURCE", "EVENT TYPE", "ACCEPTED", "DUPLICATE"],
        out,
        right=["ACCEPTED", "DUPLICATE"],
    )
    ws = f" --workspace {store.path}"
    story = STORY.format(ws=ws)
    prog = _program_name()
    if prog != "pik":
        story = story.replace("pik ", f"{prog} ")
    out.write("\n" + story + "\n")
    if not args.no_console:
        from pik_console.console.command import open_demo_console

        open_demo_console(store.path, out, read_only=read_only)
    return 0


def _program_name() -> str:
    """How the user can call pik from here: plain ``pik`` when it is on PATH, else the venv's copy."""
    if shutil.which("pik"):
        return "pik"
    local = Path(".venv") / "bin" / "pik"
    return str(local) if local.exists() else "pik"


# -- parser -------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"pik: error: {message}\n")


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        metavar="DIR",
        help=f"local workspace folder (default: $PIK_WORKSPACE or ./{DEFAULT_WORKSPACE})",
    )
    aws = common.add_argument_group("AWS backend")
    aws.add_argument(
        "--backend",
        choices=["local", "aws"],
        help="where the data lives (default: $PIK_BACKEND or local)",
    )
    aws.add_argument("--stack", metavar="NAME", help="CloudFormation stack whose outputs name the resources")
    aws.add_argument(
        "--endpoint-url", metavar="URL", help="AWS-compatible endpoint (moto server, LocalStack)"
    )
    aws.add_argument("--region", metavar="REGION")
    aws.add_argument("--profile", metavar="NAME", help="AWS credentials profile")
    parser = _Parser(
        prog="pik",
        description="Pipeline Investigation Kit: investigate data-pipeline incidents without losing data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("ingest", parents=[common], help="ingest JSON Lines (a file, or - for stdin)")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--batch-size",
        type=_int,
        default=10_000,
        metavar="N",
        help="lines per committed batch (default 10000)",
    )
    p.add_argument(
        "--again",
        action="store_true",
        help="ingest every line as a new delivery, even lines an earlier run of this file stored (by "
        "default a file is resumed: lines already stored from it, byte for byte at the same line, are "
        "skipped, so a re-run after an interruption finishes the job without adding duplicates)",
    )
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    p.set_defaults(func=cmd_ingest)

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
    p.add_argument("--limit", type=_int, default=50, metavar="N", help="records per page (default 50)")
    p.add_argument("--after", metavar="CURSOR", help="continue after this cursor (from the previous page)")
    p.add_argument("--desc", action="store_true", help="newest (or largest lag) first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="build (or reuse) the demo workspace through the real ingest path and show what it holds",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--no-console",
        action="store_true",
        help="print the summary only (default on a terminal: open the console)",
    )
    p.set_defaults(func=cmd_demo)
    from pik_console import serve

    serve.register(sub, common)
    from pik_console import investigate_cmd

    investigate_cmd.register(sub, common)
    from pik_console import aws_cmd

    aws_cmd.register(sub, common)
    from pik_console.console import command as console_cmd

    console_cmd.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "limit", 1) < 1 or getattr(args, "limit", 1) > 10_000:
        parser.error("--limit must be between 1 and 10000")
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    try:
        return int(args.func(args, out, err))
    except _UsageError as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return 2
    except Failure as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return 1
    except KitError as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"pik {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        # `pik events | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    # Run the importable module's main (not this __main__ copy), so that commands registered from other
    # modules, which import pik_console.cli, raise the exception classes that main catches.
    from pik_console.cli import main as _main

    sys.exit(_main())
