"""Draining the replay queue through the processor: receive replay messages, recompute what they touch,
delete the messages done with and release the failed ones, until nothing is visible (or a stop condition).

Holds :class:`DrainService` and its answer :class:`DrainResult` (with :class:`DrainFailure`). It prints
nothing: ``pik process`` and the console's ``p`` key show its progress and its result.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import BaseModel

from backend.errors import InvalidRequest, ReadOnlyError
from backend.ports import BULK_RECEIVE, BulkReceiveQueue, QueueMessage, ReplayQueue
from backend.services.processor import ProcessorService, WindowResult, parse_message

# Messages per receive: SQS's maximum (a queue with receive_many takes BULK_RECEIVE at a time).
RECEIVE_BATCH = 10
# Messages held (received, not yet recomputed) before their windows are recomputed and they are deleted,
# whatever the time left: bounds the memory of a drain (a held message costs a few hundred bytes).
MAX_HELD = 250_000
# Share of the visibility timeout that messages may be held before their windows are recomputed: the
# rest is left for the recompute and the delete, so that no held message becomes visible again mid-drain.
HOLD_SHARE = 1 / 3
# Failing messages listed in a result (the count is always complete).
MAX_FAILURES_LISTED = 20
# Windows recomputed between two looks at ``should_stop`` (and two progress reports) in a flush: a stop
# waits for at most this many recomputes (a few milliseconds each on a workspace).
FLUSH_WINDOWS = 32


class DrainProgress(NamedTuple):
    """Where a drain is, as ``on_progress`` hears it: messages received so far (a message received again
    after its window failed counts again), messages whose window is stored (deleted from the queue), and
    versions written."""

    received: int
    processed: int
    versions_written: int


class DrainFailure(BaseModel):
    """A message whose latest attempt in this run failed, and why."""

    message_id: str
    reason: str


class DrainResult(BaseModel):
    """What one drain did. ``model_dump()`` is the JSON of ``pik process --json`` (before its queue depth
    and metric names)."""

    dry_run: bool
    received: int
    processed: int
    failed_attempts: int
    failed_messages: int  # messages whose latest attempt failed
    dead_lettered: int  # of those, the ones whose last allowed receive this run was
    windows: int  # distinct (entity, day) windows recomputed
    recomputes: int
    versions_written: int
    unchanged: int
    failures: list[DrainFailure]  # the first MAX_FAILURES_LISTED failing messages
    seconds: float
    interrupted: bool = False  # should_stop() ended the run before the queue was empty


class _Held(NamedTuple):
    """A received message waiting for its window's recompute (its body is not kept)."""

    message_id: str
    receipt_handle: str
    receive_count: int


@dataclass
class _Tally:
    received: int = 0
    processed: int = 0
    attempts_failed: int = 0
    written: int = 0
    unchanged: int = 0
    recomputes: int = 0
    dead: int = 0
    windows: set[tuple[str, str]] = field(default_factory=set)
    failed_ids: dict[str, str] = field(default_factory=dict)  # message id -> reason of its latest failure
    # Received, window not yet recomputed: by window, with the replay ids that asked for it.
    held: dict[tuple[str, str], list[_Held]] = field(default_factory=dict)
    replays: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    held_count: int = 0
    held_since: float = 0.0  # perf_counter of the receive that started the held set
    dry_handles: list[str] = field(default_factory=list)  # dry run: handles released at the end


class DrainService:
    """Runs ``processor`` over the messages of ``queue``, each received for ``visibility_timeout_s``.

    Messages are coalesced by window: the drain receives and parses messages, holding each under its
    (entity, day) window, and recomputes every held window **once** when the queue has nothing more
    visible, when ``max_messages`` were received, or when the held set reaches a bound (MAX_HELD
    messages, or a third of the visibility timeout since its first receive, leaving two thirds for the
    recompute and the delete). After each chunk of FLUSH_WINDOWS windows, the messages of each window
    that was stored are deleted, and those of a window that failed are released; a stop asked in
    between releases the windows not recomputed yet. So a window with N messages costs one recompute per
    flush instead of one per 50 messages, and a message is deleted only after its window's versions are
    written.

    A held message that becomes visible again all the same (a recompute longer than two thirds of the
    timeout) is not lost: it is received again, and its first handle's delete is ignored by the queue; it
    costs one more receive toward its dead-letter limit, which is why the hold is bounded by time.
    """

    def __init__(
        self, queue: ReplayQueue, processor: ProcessorService, *, visibility_timeout_s: int = 30
    ) -> None:
        self.queue = queue
        self.processor = processor
        self.visibility_timeout_s = visibility_timeout_s

    def run(
        self,
        *,
        max_messages: int | None = None,
        on_progress: Callable[[DrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> DrainResult:
        """Receive, coalesce by window, recompute, delete (or release the failed ones) until the queue has
        nothing visible, or ``max_messages`` were received, or ``should_stop()`` answers True.

        ``should_stop`` is asked before every receive and, in a flush, before every FLUSH_WINDOWS windows:
        a stop ends the run within one such chunk of recomputes. The windows recomputed by then keep their
        versions and their messages are deleted; the messages of the windows not recomputed yet are
        released, visible again for the next drain (nothing is half-written: a window's versions are
        appended before any of its messages is deleted).

        ``on_progress(DrainProgress)`` is called after every receive and every chunk of recomputes.
        A failed message is released at the flush that failed it, so it is retried in this same run until
        the queue dead-letters it after its maximum receives. A malformed message is released at once. In
        a dry run every message is released at the end, untouched. If this raises (a store failure, a
        KeyboardInterrupt), every message still held is released first: none stays hidden.

        ``dead_lettered`` counts the messages whose last allowed receive this run failed: the queue
        dead-letters them at the next receive, whichever processor makes it. (The growth of the dead-letter
        queue during the run would also count what processors running beside this one dead-lettered.)

        Refused (ReadOnlyError, nothing received) with a read-only processor, even for a dry run: every
        receive counts toward the queue's dead-letter limit, so receiving is a write."""
        if self.processor.read_only:
            raise ReadOnlyError(
                "pik process receives replay messages, and every receive counts toward the queue's "
                "dead-letter limit: refused in read-only mode, even as a dry run"
            )
        started = time.perf_counter()
        tally = _Tally()
        visibility = self.visibility_timeout_s
        if self.processor.dry_run:
            visibility = max(visibility, 3600)
        hold_s = visibility * HOLD_SHARE
        interrupted = False
        try:
            while max_messages is None or tally.received < max_messages:
                if should_stop is not None and should_stop():
                    interrupted = True
                    break
                batch = self._receive(visibility, tally.received, max_messages)
                if not batch:
                    if not tally.held:
                        break
                    # Nothing more visible: recompute what is held, then look again (the messages of a
                    # window that failed are visible again, to be retried in this run).
                    if not self._flush(tally, on_progress, should_stop):
                        interrupted = True
                        break
                    continue
                self._hold(batch, tally)
                _report(on_progress, tally)
                full = tally.held_count >= MAX_HELD or time.perf_counter() - tally.held_since >= hold_s
                if full and not self._flush(tally, on_progress, should_stop):
                    interrupted = True
                    break
            if not self._flush(tally, on_progress, should_stop):
                interrupted = True
        finally:
            # Whatever stopped the run, nothing it received stays hidden: what is still held (an exception
            # before or during a flush) and, in a dry run, everything, is released.
            back = [h.receipt_handle for held in tally.held.values() for h in held]
            if back or tally.dry_handles:
                self.queue.release(back + tally.dry_handles)
        return DrainResult(
            dry_run=self.processor.dry_run,
            received=tally.received,
            processed=tally.processed,
            failed_attempts=tally.attempts_failed,
            failed_messages=len(tally.failed_ids),
            dead_lettered=tally.dead,
            windows=len(tally.windows),
            recomputes=tally.recomputes,
            versions_written=tally.written,
            unchanged=tally.unchanged,
            failures=[
                DrainFailure(message_id=k, reason=v)
                for k, v in list(tally.failed_ids.items())[:MAX_FAILURES_LISTED]
            ],
            seconds=round(time.perf_counter() - started, 3),
            interrupted=interrupted,
        )

    def _receive(self, visibility: int, received: int, max_messages: int | None) -> list[QueueMessage]:
        """One receive (of up to BULK_RECEIVE messages when the queue can, RECEIVE_BATCH otherwise); empty
        when the queue has nothing visible."""
        bulk = isinstance(self.queue, BulkReceiveQueue)
        room = BULK_RECEIVE if bulk else RECEIVE_BATCH
        if max_messages is not None:
            room = min(room, max_messages - received)
        if room <= 0:
            return []
        if isinstance(self.queue, BulkReceiveQueue):
            return self.queue.receive_many(room, visibility)
        return self.queue.receive(room, visibility)

    def _hold(self, batch: list[QueueMessage], tally: _Tally) -> None:
        """Parse ``batch`` and hold each message under its window; a malformed one fails at once."""
        if not tally.held_count:
            tally.held_since = time.perf_counter()
        tally.received += len(batch)
        bad: list[QueueMessage] = []
        held, replays = tally.held, tally.replays
        new = tuple.__new__  # a _Held per message, made as the tuple it is
        for m in batch:
            try:
                target = parse_message(m.body)
            except InvalidRequest as exc:
                bad.append(m)
                self._failed(m.message_id, m.receive_count, f"malformed message: {exc}", tally)
                continue
            key = (target.entity_id, target.day)
            here = held.get(key)
            if here is None:
                here = held[key] = []
            here.append(new(_Held, (m.message_id, m.receipt_handle, m.receive_count)))
            if target.replay_id:
                replays.setdefault(key, set()).add(target.replay_id)
        tally.held_count += len(batch) - len(bad)
        if bad:
            self._done([], [m.receipt_handle for m in bad], tally)

    def _flush(
        self,
        tally: _Tally,
        on_progress: Callable[[DrainProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> bool:
        """Recompute every held window once, FLUSH_WINDOWS at a time; after each chunk delete the messages of
        the windows stored and release those of the windows that failed. False when ``should_stop`` ended
        it first: the windows not recomputed stay held (``run`` releases them)."""
        while tally.held:
            if should_stop is not None and should_stop():
                return False
            keys = list(itertools.islice(tally.held, FLUSH_WINDOWS))
            windows = {key: sorted(tally.replays.get(key, ())) for key in keys}
            outcomes = self.processor.recompute_windows(windows)
            ok: list[str] = []
            bad: list[str] = []
            for key in keys:
                outcome = outcomes[key]
                held = tally.held[key]
                if isinstance(outcome, WindowResult):
                    tally.recomputes += 1
                    tally.windows.add(key)
                    tally.written += sum(m.written for m in outcome.metrics)
                    tally.unchanged += sum(not m.written for m in outcome.metrics)
                    tally.processed += len(held)
                    for h in held:
                        tally.failed_ids.pop(h.message_id, None)
                    ok += [h.receipt_handle for h in held]
                else:
                    for h in held:
                        self._failed(h.message_id, h.receive_count, outcome, tally)
                    bad += [h.receipt_handle for h in held]
            # Deleted (or released) before they stop being held: if this raises, run releases them all,
            # the stored windows' messages too (recomputing those again appends nothing).
            self._done(ok, bad, tally)
            for key in keys:
                tally.held_count -= len(tally.held.pop(key))
                tally.replays.pop(key, None)
            _report(on_progress, tally)
        return True

    def _failed(self, message_id: str, receive_count: int, reason: str, tally: _Tally) -> None:
        tally.attempts_failed += 1
        tally.failed_ids[message_id] = reason
        tally.dead += receive_count >= self.queue.max_receives

    def _done(self, ok: list[str], bad: list[str], tally: _Tally) -> None:
        """Delete the messages done with and release the failed ones (a dry run keeps both until the end)."""
        if self.processor.dry_run:
            tally.dry_handles += ok + bad
            return
        if ok:
            self.queue.delete(ok)
        if bad:
            self.queue.release(bad)


def _report(on_progress: Callable[[DrainProgress], None] | None, tally: _Tally) -> None:
    if on_progress is not None:
        on_progress(DrainProgress(tally.received, tally.processed, tally.written))
