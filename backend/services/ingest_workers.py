"""Preparing ingest batches in worker processes, while the caller commits the ones before them.

Parsing, validating and identifying a request (:func:`backend.services.ingest.prepare_requests`) is pure
CPU and about half of an ingest's time; storing is the other half, and must stay in one process (one
writer, batches committed in input order). :class:`PrepareWorkers` overlaps the two: batch *n + 1* is
prepared in a worker while batch *n* is committed, so a machine with two cores ingests at close to the
speed of the store alone.

The workers are forked (Linux; where fork is unavailable, ``start`` answers None and the caller prepares
in process). A worker only reads what it is sent and sends back plain values: it never touches the
workspace (it exits with ``os._exit``, so no inherited connection is ever closed or checkpointed from
it). It ignores Ctrl-C, which is the parent's to handle, and ends when the parent closes its pipe or dies.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from backend.ports import RawPacker
from backend.services.ingest import NumberedLines, PreparedBatch, Received, bodies_of, prepare_requests
from backend.times import Clock

SPLIT_AT_LEAST = 500
"""The fewest requests in each half of a first chunk cut in two (see :meth:`PrepareWorkers.prepare`)."""


def halves(chunk: Sequence[Received]) -> tuple[Sequence[Received], Sequence[Received]]:
    """``chunk`` cut in two halves, in order."""
    middle = len(chunk) // 2
    if isinstance(chunk, NumberedLines):
        return chunk.split(middle)
    return chunk[:middle], chunk[middle:]


class WorkerFailed(RuntimeError):
    """A worker process died or failed: nothing it prepared was committed."""


def _serve(conn: Connection, others: list[Connection]) -> None:  # pragma: no cover - runs in the child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in others:
        other.close()  # the parent's ends: without them, the parent's death is an EOF here
    # A batch is millions of short-lived objects that reference counting frees: the cyclic collector
    # need not rescan them every 700 allocations (nor what was alive at the fork).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    code = 0
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                break
            if job is None:
                break
            clock, run_id, packer, origins, items = job
            batch: Sequence[Received] = (
                items  # a reader's NumberedLines, sent as they are
                if origins is None
                else [Received(body, origins[o], line, size, sha) for body, o, line, size, sha in items]
            )
            try:
                conn.send(("ok", prepare_requests(batch, clock, run_id, packer)))
            except Exception as exc:  # sent back as text: the parent raises it as WorkerFailed
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (BrokenPipeError, ConnectionResetError):
        code = 1
    finally:
        os._exit(code)


class PrepareWorkers:
    """``count`` forked worker processes preparing batches in order. Use :meth:`start`; close with
    :meth:`close` (or as a context manager)."""

    def __init__(self, processes: list[Any], conns: list[Connection]) -> None:
        self._processes = processes
        self._conns = conns

    @classmethod
    def start(cls, count: int) -> PrepareWorkers | None:
        """Fork ``count`` workers; None if ``count`` < 1 or this platform cannot fork."""
        if count < 1 or "fork" not in multiprocessing.get_all_start_methods():
            return None
        ctx = multiprocessing.get_context("fork")
        pairs = [ctx.Pipe(duplex=True) for _ in range(count)]
        parents = [p for p, _ in pairs]
        processes = []
        for _, child in pairs:
            process = ctx.Process(target=_serve, args=(child, parents), daemon=True)
            process.start()
            child.close()
            processes.append(process)
        return cls(processes, parents)

    def prepare(
        self,
        chunks: Iterable[Sequence[Received]],
        clock: Clock,
        run_id: str,
        packer: Callable[[], RawPacker | None] | None = None,
        prepare_here: Callable[[Sequence[Received]], PreparedBatch] | None = None,
    ) -> Iterator[tuple[Sequence[Received], PreparedBatch]]:
        """Each chunk with its batch prepared, in order, as :func:`prepare_requests` would in this process.
        The clock is sent with each chunk and read in the worker (a wall clock: when it prepares it); so is
        ``packer()`` as it is when the chunk is sent, so the worker compresses the raw bytes too.

        With ``prepare_here`` (this process's own way to prepare), the first chunk is cut in two: a worker
        prepares the first half while this process prepares the second, which it would otherwise spend
        waiting for the first batch. The two halves are then two batches."""
        # One batch at a time per worker, sent while it waits for work: a send never meets a worker that
        # is itself sending (two large messages crossing in a pipe would block both ends).
        pending: deque[tuple[Connection, Sequence[Received]]] = deque()
        source = iter(chunks)

        def feed(conn: Connection) -> None:
            chunk = next(source, None)
            if chunk is not None:
                self._send(conn, clock, run_id, packer() if packer else None, chunk)
                pending.append((conn, chunk))

        here: list[tuple[Sequence[Received], PreparedBatch]] = []
        first = next(source, None)
        if first is None:
            return
        if prepare_here is not None and len(first) >= 2 * SPLIT_AT_LEAST:
            head, tail = halves(first)
            self._send(self._conns[0], clock, run_id, packer() if packer else None, head)
            pending.append((self._conns[0], head))
            for conn in self._conns[1:]:
                feed(conn)
            here.append((tail, prepare_here(tail)))
        else:
            source = itertools.chain([first], source)
            for conn in self._conns:
                feed(conn)
        while pending:
            conn, chunk = pending.popleft()
            batch = self._receive(conn)
            batch.attach(bodies_of(chunk))
            feed(conn)  # the next batch is prepared while the caller commits this one
            yield chunk, batch
            if here:  # the first chunk's second half, right after its first
                yield here.pop()

    @staticmethod
    def _send(
        conn: Connection, clock: Clock, run_id: str, packer: RawPacker | None, chunk: Sequence[Received]
    ) -> None:
        job: tuple[Any, ...]
        if isinstance(chunk, NumberedLines):
            job = (clock, run_id, packer, None, chunk)
        else:
            origins: dict[str, int] = {}
            items = [
                (r.body, origins.setdefault(r.origin, len(origins)), r.line, r.size, r.sha256) for r in chunk
            ]
            job = (clock, run_id, packer, list(origins), items)
        try:
            conn.send(job)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise WorkerFailed(f"an ingest worker process ended unexpectedly ({exc})") from None

    @staticmethod
    def _receive(conn: Connection) -> PreparedBatch:
        try:
            kind, value = conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
            raise WorkerFailed(
                f"an ingest worker process ended unexpectedly ({exc or 'no answer'})"
            ) from None
        if kind != "ok":
            raise WorkerFailed(f"an ingest worker failed: {value}")
        batch: PreparedBatch = value
        return batch

    def close(self) -> None:
        """Stop the workers (what they were preparing is dropped: nothing of it was stored)."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
        for process in self._processes:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)

    def __enter__(self) -> PrepareWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
