"""Draining the replay queue through the processor: receive replay messages, recompute what they touch,
delete the messages done with and release the failed ones, until nothing is visible (or a stop condition).

Holds :class:`DrainService` and its answer :class:`DrainResult` (with :class:`DrainFailure`). It prints
nothing: ``pik process`` and the console's ``p`` key show its progress and its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from backend.errors import ReadOnlyError
from backend.ports import QueueMessage, ReplayQueue
from backend.services.processor import ProcessorService

# Messages per receive: SQS's maximum.
RECEIVE_BATCH = 10
# Messages processed together (several receives); keep it well within a visibility timeout's work.
PROCESS_CHUNK = 50
# Failing messages listed in a result (the count is always complete).
MAX_FAILURES_LISTED = 20


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
    held: list[str] = field(default_factory=list)  # dry run: handles released at the end


class DrainService:
    """Runs ``processor`` over the messages of ``queue``, each received for ``visibility_timeout_s``."""

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
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> DrainResult:
        """Receive, process, delete (or release the failed ones) until the queue has nothing visible, or
        ``max_messages`` were received, or ``should_stop()`` answers True (asked before every chunk).

        ``on_progress(received, versions_written)`` is called after every chunk of up to PROCESS_CHUNK
        messages. A failed message is released at once, so it is retried in this same run until the queue
        dead-letters it after its maximum receives. In a dry run every message is released at the end,
        untouched.

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
        try:
            while max_messages is None or tally.received < max_messages:
                if should_stop is not None and should_stop():
                    break
                batch = self._receive(visibility, tally.received, max_messages)
                if not batch:
                    break
                self._process(batch, tally)
                if on_progress is not None:
                    on_progress(tally.received, tally.written)
        finally:
            if tally.held:
                self.queue.release(tally.held)
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
        )

    def _receive(self, visibility: int, received: int, max_messages: int | None) -> list[QueueMessage]:
        """Up to PROCESS_CHUNK messages (several receives), so that the messages of one window are
        recomputed once; empty when the queue has nothing visible."""
        batch: list[QueueMessage] = []
        while len(batch) < PROCESS_CHUNK:
            room = PROCESS_CHUNK - len(batch)
            if max_messages is not None:
                room = min(room, max_messages - received - len(batch))
            got = self.queue.receive(min(RECEIVE_BATCH, room), visibility) if room > 0 else []
            if not got:
                break
            batch += got
        return batch

    def _process(self, batch: list[QueueMessage], tally: _Tally) -> None:
        """Process one chunk, count it into ``tally``, and delete or release its messages."""
        tally.received += len(batch)
        result = self.processor.process([m.body for m in batch])
        tally.processed += result.processed
        tally.written += result.written
        tally.unchanged += result.unchanged
        tally.recomputes += len(result.windows)
        tally.windows.update((w.entity_id, w.day) for w in result.windows)
        ok = [m.receipt_handle for i, m in enumerate(batch) if i not in result.failed]
        bad = [batch[i] for i in sorted(result.failed)]
        tally.attempts_failed += len(bad)
        for i, m in enumerate(batch):  # a message is failing if its latest attempt failed
            if i in result.failed:
                tally.failed_ids[m.message_id] = result.failed[i]
                tally.dead += m.receive_count >= self.queue.max_receives
            else:
                tally.failed_ids.pop(m.message_id, None)
        if self.processor.dry_run:
            tally.held += [m.receipt_handle for m in batch]
        else:
            self.queue.delete(ok)
            self.queue.release([m.receipt_handle for m in bad])
