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
from backend.services.ingest import QUARANTINE_MAX_BYTES, NumberedLines, Received
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
    """JSON Lines from ``stream`` as requests, a batch of lines at a time (:meth:`batches`) or one at a
    time (iterating it): memory stays bounded whatever the file size.

    The input is read in blocks and split at newlines in bulk: per line, the reader does almost nothing
    in Python, so the one process that stores spends its time storing.

    A line longer than ``limit`` is not held: its prefix, size and sha256 are passed on so that it is
    rejected for its size and quarantined (bounded), and reading continues with the next line.

    A request is the content of its line, without the line's framing: the ``\n`` (or ``\r\n``) that ends it
    and, for line 1, a UTF-8 byte order mark that starts the input (editors on Windows write one). The BOM
    marks the file's encoding, not the first event's: it is not stored with line 1's raw bytes, so line 1's
    bytes, its event id and its resume check are the same with or without it. A BOM anywhere else is data,
    and rejected as such. ``bytes_read`` counts every byte read, framing included.
    """

    BLOCK = 1 << 20  # bytes asked of the stream per read (a pipe may answer fewer)

    def __init__(self, stream: IO[bytes], origin: str, limit: int = MAX_BODY_BYTES) -> None:
        self._stream = stream
        self._origin = origin
        self._limit = limit
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Received]:
        for batch in self.batches(1000):
            yield from batch

    def batches(self, size: int) -> Iterator[NumberedLines]:
        """The input's lines, ``size`` to a batch (the last batch may have fewer)."""
        if size < 1:
            raise ValueError("a batch needs at least one line")
        first = 1
        bodies: list[bytes] = []
        oversize: dict[int, tuple[int, str]] = {}
        end = 0
        for block in self._blocks():
            lines, n, i = block.lines, len(block.lines), 0
            while i < n:
                take = min(size - len(bodies), n - i)
                base = len(bodies)
                bodies.extend(lines if take == n else lines[i : i + take])
                for j, long in block.oversize.items():
                    if i <= j < i + take:
                        oversize[base + j - i] = long
                i += take
                end = block.end(i)
                if len(bodies) == size:
                    yield NumberedLines(self._origin, first, bodies, oversize, end)
                    first += size
                    bodies, oversize = [], {}
        if bodies:
            yield NumberedLines(self._origin, first, bodies, oversize, end)

    def _read(self) -> bytes:
        read1 = getattr(self._stream, "read1", None)  # what is there, up to BLOCK: a pipe is not waited on
        data = read1(self.BLOCK) if read1 is not None else self._stream.read(self.BLOCK)
        self.bytes_read += len(data)
        return data

    def _blocks(self) -> Iterator[_Block]:
        """The input's lines, a block at a time, in order."""
        limit = self._limit
        buf = b""
        offset = 0  # where ``buf`` starts in the input
        while len(buf) < len(UTF8_BOM):  # a pipe may deliver the first bytes one at a time
            data = self._read()
            if not data:
                break
            buf += data
        if buf.startswith(UTF8_BOM):
            buf, offset = buf[len(UTF8_BOM) :], len(UTF8_BOM)
        while True:
            cut = buf.rfind(b"\n")
            if cut >= 0:
                complete, buf = buf[:cut], buf[cut + 1 :]
                yield _Block.split(complete, offset, True, limit)
                offset += cut + 1
            if len(buf) > limit + 1:  # no newline in sight and too long to be one request (even with \r)
                block, buf = self._too_long(buf, offset)
                yield block
                offset = block.end(1)
                continue
            data = self._read()
            if not data:
                if buf:
                    yield _Block.split(buf, offset, False, limit)
                return
            buf = buf + data if buf else data

    def _too_long(self, start: bytes, offset: int) -> tuple[_Block, bytes]:
        """A line too long to hold that begins with ``start``: its prefix, size and sha256, streamed to its
        end; and what was read after it."""
        digest = hashlib.sha256(start)
        prefix = start[:QUARANTINE_MAX_BYTES]
        size = len(start)
        rest = b""
        newline = False
        while True:
            data = self._read()
            if not data:
                break
            cut = data.find(b"\n")
            part = data if cut < 0 else data[:cut]
            digest.update(part)
            size += len(part)
            if len(prefix) < QUARANTINE_MAX_BYTES:
                prefix += part[: QUARANTINE_MAX_BYTES - len(prefix)]
            if cut >= 0:
                rest, newline = data[cut + 1 :], True
                break
        block = _Block([prefix], offset, None, newline, {0: (size, digest.hexdigest())}, size)
        return block, rest


class _Block:
    """Consecutive lines read in one go: each line's request (``lines``), where the first starts in the
    input (``offset``), and each line as read without its ``\n`` (``raw``: None when the one line is too long
    to hold; ``size`` is then its length). ``newline``: whether the last line ends with one."""

    __slots__ = ("lines", "newline", "offset", "oversize", "raw", "size")

    def __init__(
        self,
        lines: list[bytes],
        offset: int,
        raw: list[bytes] | None,
        newline: bool,
        oversize: dict[int, tuple[int, str]],
        size: int = 0,
    ) -> None:
        self.lines, self.offset, self.raw, self.newline = lines, offset, raw, newline
        self.oversize, self.size = oversize, size

    @classmethod
    def split(cls, data: bytes, offset: int, newline: bool, limit: int) -> _Block:
        """The lines of ``data`` (split at each ``\n``; the last one ends with one if ``newline``)."""
        raw = data.split(b"\n")
        lines = raw
        if b"\r" in data:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in raw]
        oversize: dict[int, tuple[int, str]] = {}
        if len(data) > limit and max(map(len, lines)) > limit:
            lines = list(lines)
            for i, line in enumerate(raw):
                if len(lines[i]) > limit:  # kept as its prefix, with the whole line's size and digest
                    oversize[i] = (len(line), hashlib.sha256(line).hexdigest())
                    lines[i] = line[:QUARANTINE_MAX_BYTES]
        return cls(lines, offset, raw, newline, oversize)

    def end(self, count: int) -> int:
        """Where in the input the first ``count`` lines end, their framing included."""
        if self.raw is None:
            return self.offset + self.size + self.newline
        newlines = count if self.newline or count < len(self.raw) else count - 1
        return self.offset + sum(map(len, self.raw[:count])) + newlines


def read_lines(stream: IO[bytes], origin: str, limit: int = MAX_BODY_BYTES) -> Iterator[Received]:
    """The requests of :class:`LineReader` over ``stream``, one at a time."""
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
    """The batches read from the input and not yet committed (the ones being prepared and committed):
    after a failure, which of their lines are stored is asked of the ledger. Also where in the input the
    committed lines end, for the progress bar (reading runs ahead of storing when workers prepare)."""

    def __init__(self, reader: LineReader, size: int) -> None:
        self._reader = reader
        self._size = size
        self.pending: deque[NumberedLines] = deque()
        self.bytes_done = 0

    def __iter__(self) -> Iterator[NumberedLines]:
        for batch in self._reader.batches(self._size):
            self.pending.append(batch)
            yield batch

    def finished(self, through_line: int) -> None:
        while self.pending and self.pending[0].last <= through_line:
            self.bytes_done = self.pending.popleft().end
        if not self.pending:
            self.bytes_done = self._reader.bytes_read

    def unfinished(self) -> int:
        return sum(len(batch) for batch in self.pending)


def _stored_of_pending(ledger: IngestLedger | None, origin: str, reading: _Reading) -> int | None:
    """How many of the requests of the unfinished batches are stored, as the index says (None: unknown)."""
    if not reading.pending:
        return 0
    if ledger is None:
        return None
    try:
        known = ledger.delivered(origin, reading.pending[0].first, reading.pending[-1].last)
    except KitError:
        return None
    stored = 0
    for batch in reading.pending:
        for item in batch:
            line = item.line if item.line is not None else 0
            stored += (item.sha256 or sha256_hex(item.body)) in known.get(line, ())
    return stored


def _what_is_stored(
    backend: Any, ledger: IngestLedger | None, origin: str, reading: _Reading, done: int, skipped: int
) -> str:
    """What a failed or interrupted run leaves, exactly, and what running it again does."""
    read = done + reading.unfinished()
    pending = _stored_of_pending(ledger, origin, reading)
    if pending is None and backend.name == "local":
        pending = 0  # a local batch is one transaction: the unfinished one left nothing
    if pending is None:
        stored = (
            f"{done:,} of the {read:,} lines read are stored, and some of the last {reading.unfinished():,} "
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
    reading = _Reading(reader, args.batch_size)
    display = ingest_display(err, err.isatty() and not args.json, input_size(stream))
    try:
        with stream, _bulk_gc(), display:
            for batch in service.resume_batches(reading, ledger, workers):
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
