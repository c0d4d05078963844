"""``pik process``: drain the local replay queue through the processor (versioned aggregates). On AWS the
processor Lambda consumes the queue instead."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from backend.errors import InvalidRequest
from backend.ports import ReplayQueue
from backend.services.drain import DrainProgress, DrainService
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
    if report["interrupted"]:
        return 130
    return 1 if report["failed_messages"] else 0


def run_drain(drainer: DrainService, max_messages: int | None, err: IO[str], quiet: bool) -> dict[str, Any]:
    """:meth:`DrainService.run` with a progress bar on ``err`` (messages received of the queue's visible
    depth, rate, ETA) when that is a terminal and not ``quiet``; the result as ``pik process --json``
    prints it (before the queue depth and the metric names are added).

    The first Ctrl-C (SIGINT) stops the drain at the next chunk of windows: the windows already
    recomputed keep their versions and their messages are deleted, the others' messages are released to
    the queue, and the result says ``interrupted``. A second one interrupts the chunk in progress too
    (KeyboardInterrupt): the drain releases every message it still holds before it propagates."""
    stop = _StopOnSigint(err)
    with stop:
        if not (err.isatty() and not quiet):
            return drainer.run(max_messages=max_messages, should_stop=stop).model_dump()
        visible = drainer.queue.depth().visible
        total = visible if max_messages is None else min(visible, max_messages)
        with Progress(
            TextColumn("  processing"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[count]} messages {task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(file=err),
            transient=True,
        ) as bar:
            task = bar.add_task("drain", total=total or None, count=f"0/{total:,}", rate="", note="")
            started = time.monotonic()

            def progress(at: DrainProgress) -> None:
                elapsed = time.monotonic() - started
                rate = f"{at.processed / elapsed:,.0f}/s" if elapsed > 0 and at.processed else ""
                note = f"{at.received:,} received · {at.versions_written:,} versions written"
                note += " · stopping" if stop.asked else ""
                most = max(total, at.processed)
                count = f"{at.processed:,}/{most:,}"
                bar.update(
                    task, completed=at.processed, total=most or None, count=count, rate=rate, note=note
                )

            result = drainer.run(max_messages=max_messages, on_progress=progress, should_stop=stop)
        return result.model_dump()


class _StopOnSigint:
    """``should_stop`` for a drain: True once SIGINT arrived (the first one); the second raises
    KeyboardInterrupt. Only in the main thread (elsewhere signals cannot be caught: a no-op)."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.asked = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.asked

    def _handler(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        self.err.write(
            "\npik process: stopping after the windows being recomputed; the messages not done "
            "go back to the queue (Ctrl-C again stops at once)\n"
        )
        self.err.flush()

    def __enter__(self) -> _StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
    if r["interrupted"]:
        mode = "INTERRUPTED (the rest stays in the queue): " + mode
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
