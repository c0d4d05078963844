"""``pik ingest FILE|-``: JSON Lines in, a summary out. A file is resumed after an interruption (lines an
earlier run of it stored are skipped); stdin is not."""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from backend.errors import KitError, ReadOnlyError
from backend.identity import sha256_hex
from backend.model import MAX_BODY_BYTES, IngestStatus
from backend.ports import IngestLedger
from backend.services.ingest import QUARANTINE_MAX_BYTES, Received
from pik_console.cli.common import READ_ONLY_HELP, Failure, count, open_backend, print_json
from pik_console.cli.ingest_progress import ingest_display, input_size
from pik_console.text import safe

if TYPE_CHECKING:
    from backend.services.ingest_workers import PrepareWorkers

REJECTIONS_IN_JSON = 1000
# Below this size a file is ingested in one process by default (about one batch of typical events).
SMALL_INPUT_BYTES = 2 * 2**20
REJECTIONS_IN_TEXT = 20


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ingest", parents=[common], help="ingest JSON Lines (a file, or - for stdin)")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--batch-size",
        type=count,
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
    p.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="processes that parse and validate lines while the main one stores them (default: one per "
        "core beyond the first, at most 2, for inputs over 2 MiB; 0: all in one process)",
    )
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    p.set_defaults(func=cmd_ingest)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected 0 to 64 processes, got {value}")
    return value


def default_workers() -> int:
    """One worker per core beyond the one that stores, at most 2 (more only compete with the store)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(2, cores - 1))


UTF8_BOM = b"\xef\xbb\xbf"


class LineReader:
    """JSON Lines from ``stream`` as requests, one at a time: memory stays bounded whatever the file size.

    A line longer than ``limit`` is not held: its prefix, size and sha256 are passed on so that it is
    rejected for its size and quarantined (bounded), and reading continues with the next line.

    A request is the content of its line, without the line's framing: the ``\n`` (or ``\r\n``) that ends it
    and, for line 1, a UTF-8 byte order mark that starts the input (editors on Windows write one). The BOM
    marks the file's encoding, not the first event's: it is not stored with line 1's raw bytes, so line 1's
    bytes, its event id and its resume check are the same with or without it. A BOM anywhere else is data,
    and rejected as such. ``bytes_read`` counts every byte read, framing included.
    """

    def __init__(self, stream: IO[bytes], origin: str, limit: int = MAX_BODY_BYTES) -> None:
        self._stream = stream
        self._origin = origin
        self._limit = limit
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Received]:
        stream, origin, limit = self._stream, self._origin, self._limit
        number = 0
        while True:
            line = stream.readline(limit + 2 + (len(UTF8_BOM) if number == 0 else 0))
            if not line:
                return
            self.bytes_read += len(line)
            if number == 0 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
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
                self.bytes_read += len(line)
                if not line:
                    break
            yield Received(prefix, origin, number, size=size, sha256=digest.hexdigest())


def read_lines(stream: IO[bytes], origin: str, limit: int = MAX_BODY_BYTES) -> Iterator[Received]:
    """The requests of :class:`LineReader` over ``stream``, for callers that need no byte count."""
    return iter(LineReader(stream, origin, limit))


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


def open_input(source_name: str) -> tuple[IO[bytes], str]:
    """The byte stream of ``FILE`` (or stdin for ``-``) and its origin as receipts record it."""
    if source_name == "-":
        return sys.stdin.buffer, "stdin"
    path = Path(source_name)
    if path.is_dir():
        raise Failure(f"cannot read {source_name}: it is a folder, not a JSON Lines file")
    try:
        return path.open("rb"), f"file:{path.name}"
    except OSError as exc:
        raise Failure(f"cannot read {source_name}: {exc.strerror or exc}") from None


class _Reading:
    """The requests read from the input and not yet in a finished batch (the batches being prepared and
    committed): after a failure, which of them are stored is asked of the ledger. Also where in the input
    the finished lines end, for the progress bar (reading runs ahead of storing when workers prepare)."""

    MARK_EVERY = 1000

    def __init__(self, requests: Iterator[Received], reader: LineReader | None = None) -> None:
        self._requests = requests
        self._reader = reader
        self.pending: dict[int, Received] = {}
        self._marks: deque[tuple[int, int]] = deque()  # (line, bytes read through it), every MARK_EVERY lines
        self.bytes_done = 0

    def __iter__(self) -> Iterator[Received]:
        for item in self._requests:
            if item.line is not None:
                self.pending[item.line] = item
                if self._reader is not None and item.line % self.MARK_EVERY == 0:
                    self._marks.append((item.line, self._reader.bytes_read))
            yield item

    def finished(self, through_line: int) -> None:
        for line in [n for n in self.pending if n <= through_line]:
            del self.pending[line]
        while self._marks and self._marks[0][0] <= through_line:
            self.bytes_done = self._marks.popleft()[1]
        if not self.pending and self._reader is not None:
            self.bytes_done = self._reader.bytes_read


def _stored_of_pending(ledger: IngestLedger | None, origin: str, reading: _Reading) -> int | None:
    """How many of the requests of the unfinished batch are stored, as the index says (None: unknown)."""
    if not reading.pending:
        return 0
    if ledger is None:
        return None
    lines = sorted(reading.pending)
    try:
        known = ledger.delivered(origin, lines[0], lines[-1])
    except KitError:
        return None
    stored = 0
    for line in lines:
        item = reading.pending[line]
        stored += (item.sha256 or sha256_hex(item.body)) in known.get(line, ())
    return stored


def _what_is_stored(
    backend: Any, ledger: IngestLedger | None, origin: str, reading: _Reading, done: int, skipped: int
) -> str:
    """What a failed or interrupted run leaves, exactly, and what running it again does."""
    read = done + len(reading.pending)
    pending = _stored_of_pending(ledger, origin, reading)
    if pending is None and backend.name == "local":
        pending = 0  # a local batch is one transaction: the unfinished one left nothing
    if pending is None:
        stored = (
            f"{done:,} of the {read:,} lines read are stored, and some of the last {len(reading.pending):,} "
            "may be too (on AWS a batch is not atomic)"
        )
    else:
        stored = f"{done + pending:,} of the {read:,} lines read are stored"
        if skipped:
            stored += f" ({skipped:,} of them by an earlier run)"
    if ledger is not None:
        return (
            f"{stored}; running the same command again resumes: it skips every stored line and adds no "
            "duplicate receipts"
        )
    return f"{stored}; running the same command again ingests every line again (stored ones as DUPLICATE)"


def cmd_ingest(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    source_name = args.file
    stream, origin = open_input(source_name)
    # Imported here, not with the CLI: every other command starts without multiprocessing.
    from backend.services.ingest_workers import PrepareWorkers

    # Forked before the workspace is opened: a worker holds nothing of it. A file of less than one batch
    # is over before a worker would have helped.
    count = args.workers
    if count is None:
        size = input_size(stream)
        count = 0 if size is not None and size < SMALL_INPUT_BYTES else default_workers()
    workers = PrepareWorkers.start(count)
    try:
        return _ingest(args, out, err, stream, origin, workers)
    finally:
        if workers is not None:
            workers.close()


def _ingest(
    args: argparse.Namespace,
    out: IO[str],
    err: IO[str],
    stream: IO[bytes],
    origin: str,
    workers: PrepareWorkers | None,
) -> int:
    from backend.services.ingest_workers import WorkerFailed

    source_name = args.file
    backend = open_backend(args, create=True)
    service = backend.ingest()
    # A file is resumed: lines an earlier run of it stored are skipped. stdin is not (two pipes are two
    # inputs, and a line at the same position of another pipe is a real redelivery).
    ledger = backend.ledger if origin != "stdin" and not args.again else None
    counts = {IngestStatus.ACCEPTED: 0, IngestStatus.DUPLICATE: 0, IngestStatus.REJECTED: 0}
    rejections: list[dict[str, Any]] = []
    skewed = 0
    lines = 0
    skipped = 0
    started = time.perf_counter()
    reader = LineReader(stream, origin)
    reading = _Reading(iter(reader), reader)
    display = ingest_display(err, err.isatty() and not args.json, input_size(stream))
    try:
        with stream, _bulk_gc(), display:
            requests: Iterator[Received] = iter(reading)
            for batch in service.resume_stream(requests, ledger, args.batch_size, workers):
                done = batch.committed
                counts[IngestStatus.ACCEPTED] += done.accepted
                counts[IngestStatus.DUPLICATE] += done.duplicate
                counts[IngestStatus.REJECTED] += done.rejected
                if done.rejected and len(rejections) < REJECTIONS_IN_JSON:
                    rejections.extend(
                        {"line": line, "reason": reason}
                        for line, reason in done.rejections()[: REJECTIONS_IN_JSON - len(rejections)]
                    )
                skewed += done.clock_skew
                told = done.accepted + done.duplicate + done.rejected
                lines += told + batch.skipped
                skipped += batch.skipped
                reading.finished(lines)
                display.update(lines, reading.bytes_done)
    except ReadOnlyError:
        raise  # nothing was stored: no advice about re-running
    except OSError as exc:
        stored = _what_is_stored(backend, ledger, origin, reading, lines, skipped)
        raise Failure(f"reading {source_name} failed: {exc.strerror or exc}; {stored}") from None
    except (KitError, WorkerFailed) as exc:
        raise Failure(
            f"{exc} — {_what_is_stored(backend, ledger, origin, reading, lines, skipped)}"
        ) from None
    except KeyboardInterrupt:
        # The bar is already erased (the display's exit): this is the one message an interrupted run prints.
        stored = _what_is_stored(backend, ledger, origin, reading, lines, skipped)
        err.write(f"pik ingest: interrupted; {stored}\n")
        return 130
    finally:
        backend.close()
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
        print_json(summary, out)
    else:
        print_summary(summary, backend.location, out)
    return 0


def print_summary(summary: dict[str, Any], location: str, out: IO[str]) -> None:
    """The summary of one ``pik ingest`` as text: counts, resumed lines, clock skew, the first rejections."""
    lines, seconds, skipped = summary["lines"], summary["seconds"], summary["already_ingested"]
    skewed, rejections = summary["clock_skew"], summary["rejections"]
    rate = f" ({summary['lines_per_second']:,} lines/s)" if summary["lines_per_second"] else ""
    out.write(
        f"Read {lines:,} lines from {safe(summary['input'])} into {location} in {seconds:.1f} s{rate}\n"
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
