"""``pik process``: drain the local replay queue through the processor (versioned aggregates). On AWS the
processor Lambda consumes the queue instead."""

from __future__ import annotations

import argparse
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.ports import ReplayQueue
from backend.services.drain import DrainService
from backend.services.processor import ProcessorService
from pik_console.cli.common import (
    READ_ONLY_HELP,
    Failure,
    count,
    open_backend,
    print_json,
    settings_from,
    usage,
)
from pik_console.text import safe


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "process",
        parents=[common],
        help="drain the local replay queue through the processor (versioned aggregates)",
        description="Receive replay messages, recompute every (entity, day) they touch from the whole window "
        "in the index, and append a new aggregate version for each metric whose inputs changed. Failed "
        "messages are retried until the queue dead-letters them (settings.toml [queue] max_receives). "
        "--dry-run (or DRY_RUN=true) computes and reports without writing or consuming messages.",
    )
    p.add_argument("--dry-run", action="store_true", help="compute and report; write nothing")
    p.add_argument("--max-messages", type=count, metavar="N", help="stop after receiving N messages")
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_process)


def cmd_process(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    settings = settings_from(args)
    if settings.backend == "aws":
        raise usage("pik process drains the local replay queue; on AWS the processor Lambda consumes it")
    backend = open_backend(args, create=False)
    try:
        try:
            metrics = backend.metrics()
            drainer = backend.drain(dry_run=args.dry_run or settings.dry_run)
        except InvalidRequest as exc:
            raise Failure(f"settings.toml: {exc}") from None
        report = run_drain(drainer, args.max_messages, err, args.json)
        depth = drainer.queue.depth()
    finally:
        backend.close()
    report["queue"] = {"visible": depth.visible, "in_flight": depth.in_flight, "dead": depth.dead}
    report["metrics"] = [m.name for m in metrics]
    if args.json:
        print_json(report, out)
    else:
        _print_process(report, out)
    return 1 if report["failed_messages"] else 0


def run_drain(drainer: DrainService, max_messages: int | None, err: IO[str], quiet: bool) -> dict[str, Any]:
    """:meth:`DrainService.run` with its progress on ``err`` when that is a terminal and not ``quiet``; the
    result as ``pik process --json`` prints it (before the queue depth and the metric names are added)."""
    if not (err.isatty() and not quiet):
        return drainer.run(max_messages=max_messages).model_dump()

    def progress(received: int, written: int) -> None:
        err.write(f"\r  {received:,} messages received, {written:,} versions written…")
        err.flush()

    try:
        result = drainer.run(max_messages=max_messages, on_progress=progress)
    finally:
        err.write("\r\x1b[K")
    return result.model_dump()


def drain(
    queue: ReplayQueue,
    service: ProcessorService,
    visibility_s: int,
    max_messages: int | None,
    err: IO[str],
    quiet: bool,
) -> dict[str, Any]:
    """:func:`run_drain` over ``queue`` and ``service`` as given (the tests' and benchmarks' entry point: a
    processor built on stores they wrap). Refused (ReadOnlyError, nothing received) with a read-only
    ``service``, even for a dry run."""
    return run_drain(
        DrainService(queue, service, visibility_timeout_s=visibility_s), max_messages, err, quiet
    )


def _print_process(r: dict[str, Any], out: IO[str]) -> None:
    if not r["received"]:
        q = r["queue"]
        out.write(
            f"The replay queue has no visible messages ({q['in_flight']:,} in flight, {q['dead']:,} dead "
            "letters). Send some with `pik replay ... --execute`.\n"
        )
        return
    mode = "DRY RUN (nothing written): " if r["dry_run"] else ""
    verb = "would be written" if r["dry_run"] else "written"
    out.write(
        f"{mode}{r['received']:,} messages received in {r['seconds']:.1f} s: {r['processed']:,} processed, "
        f"{r['failed_attempts']:,} failed attempts, {r['dead_lettered']:,} dead-lettered\n"
    )
    windows = f"{r['windows']:,} aggregate window{'' if r['windows'] == 1 else 's'}"
    out.write(
        f"  {windows} ({', '.join(r['metrics'])}), {r['recomputes']:,} recomputes: "
        f"{r['versions_written']:,} new versions {verb}, {r['unchanged']:,} unchanged (same inputs)\n"
    )
    if r["failures"]:
        out.write("Messages that still fail:\n")
        for f in r["failures"]:
            out.write(f"  {f['message_id']}: {safe(f['reason'], 300)}\n")
    q = r["queue"]
    out.write(
        f"Queue now: {q['visible']:,} visible, {q['in_flight']:,} in flight, {q['dead']:,} dead letters\n"
    )
