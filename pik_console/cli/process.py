"""``pik process``: drain the local replay queue through the processor (versioned aggregates). On AWS the
processor Lambda consumes the queue instead."""

from __future__ import annotations

import argparse
import time
from typing import IO, Any

from backend.errors import InvalidRequest, ReadOnlyError
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


# Messages per receive: SQS's maximum.
RECEIVE_BATCH = 10
# Messages processed together (several receives); keep it well within a visibility timeout's work.
PROCESS_CHUNK = 50


# -- pik process ---------------------------------------------------------------------------------------------


def cmd_process(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    settings = settings_from(args)
    if settings.backend == "aws":
        raise usage("pik process drains the local replay queue; on AWS the processor Lambda consumes it")
    dry_run = args.dry_run or settings.dry_run
    backend = open_backend(args, create=False)
    try:
        try:
            metrics = backend.metrics()
            service = backend.processor(dry_run=dry_run)
        except InvalidRequest as exc:
            raise Failure(f"settings.toml: {exc}") from None
        backend.need("queue")
        queue: Any = backend.queue
        visibility = backend.workspace_settings().queue.visibility_timeout_s
        report = drain(queue, service, visibility, args.max_messages, err, args.json)
        depth = queue.depth()
    finally:
        backend.close()
    report["queue"] = {"visible": depth.visible, "in_flight": depth.in_flight, "dead": depth.dead}
    report["metrics"] = [m.name for m in metrics]
    if args.json:
        print_json(report, out)
    else:
        _print_process(report, out)
    return 1 if report["failed_messages"] else 0


def drain(
    queue: Any,
    service: ProcessorService,
    visibility_s: int,
    max_messages: int | None,
    err: IO[str],
    quiet: bool,
) -> dict[str, Any]:
    """Receive, process, delete (or release the failed ones) until the queue has nothing visible.

    A failed message is released at once, so it is retried in this same run until the queue dead-letters
    it after its maximum receives. In a dry run every message is released at the end, untouched.

    ``dead_lettered`` counts the messages whose last allowed receive this run failed: the queue
    dead-letters them at the next receive, whichever processor makes it. (The growth of the dead-letter
    queue during the run would also count what processors running beside this one dead-lettered.)

    Refused (ReadOnlyError, nothing received) with a read-only ``service``, even for a dry run: every receive
    counts toward the queue's dead-letter limit, so receiving is a write."""
    if service.read_only:
        raise ReadOnlyError(
            "pik process receives replay messages, and every receive counts toward the queue's dead-letter "
            "limit: refused in read-only mode, even as a dry run"
        )
    started = time.perf_counter()
    processed = attempts_failed = received = written = unchanged = recomputes = dead = 0
    windows: set[tuple[str, str]] = set()
    failed_ids: dict[str, str] = {}
    held: list[str] = []  # dry run: handles released at the end
    show = err.isatty() and not quiet
    visibility = visibility_s if not service.dry_run else max(visibility_s, 3600)
    try:
        while max_messages is None or received < max_messages:
            # Up to PROCESS_CHUNK messages at a time: the messages of one window are recomputed once.
            batch: list[Any] = []
            while len(batch) < PROCESS_CHUNK:
                room = PROCESS_CHUNK - len(batch)
                if max_messages is not None:
                    room = min(room, max_messages - received - len(batch))
                got = queue.receive(min(RECEIVE_BATCH, room), visibility) if room > 0 else []
                if not got:
                    break
                batch += got
            if not batch:
                break
            received += len(batch)
            result = service.process([m.body for m in batch])
            processed += result.processed
            written += result.written
            unchanged += result.unchanged
            recomputes += len(result.windows)
            windows.update((w.entity_id, w.day) for w in result.windows)
            ok = [m.receipt_handle for i, m in enumerate(batch) if i not in result.failed]
            bad = [batch[i] for i in sorted(result.failed)]
            attempts_failed += len(bad)
            for i, m in enumerate(batch):  # a message is failing if its latest attempt failed
                if i in result.failed:
                    failed_ids[m.message_id] = result.failed[i]
                    dead += m.receive_count >= queue.max_receives
                else:
                    failed_ids.pop(m.message_id, None)
            if service.dry_run:
                held += [m.receipt_handle for m in batch]
            else:
                queue.delete(ok)
                queue.release([m.receipt_handle for m in bad])
            if show:
                err.write(f"\r  {received:,} messages received, {written:,} versions written…")
                err.flush()
    finally:
        if held:
            queue.release(held)
        if show:
            err.write("\r\x1b[K")
    return {
        "dry_run": service.dry_run,
        "received": received,
        "processed": processed,
        "failed_attempts": attempts_failed,
        "failed_messages": len(failed_ids),
        "dead_lettered": dead,
        "windows": len(windows),
        "recomputes": recomputes,
        "versions_written": written,
        "unchanged": unchanged,
        "failures": [{"message_id": k, "reason": v} for k, v in list(failed_ids.items())[:20]],
        "seconds": round(time.perf_counter() - started, 3),
    }


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
