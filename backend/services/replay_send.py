"""Sending a checked replay plan: the planned receipts read again a stretch at a time and each stretch let
through once it matches the check (:func:`checked`), then sent ten per batch call with retries
(:func:`send`). Used by :class:`backend.services.replay.ReplayService`; nothing here audits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from backend.errors import KitError, StoreError
from backend.model import ReplayPlan, ReplayRequest
from backend.ports import QUEUE_BATCH, InvestigationIndex, Receipt, ReplayQueue, ReplaySelection
from backend.replay_fingerprint import CHECKPOINT_EVERY, Fingerprint
from backend.services.replay_messages import message_body

# Consecutive batch calls failing as a whole before the queue is taken to be down (the rest not sent).
MAX_BATCH_ERRORS_IN_A_ROW = 3


class PlanChanged(KitError):
    """The list read for sending is not the one checked against the preview (the index changed in
    between): raised before the stretch that differs is sent."""


@dataclass(slots=True)
class Progress:
    sent: int = 0
    failed: int = 0
    unconfirmed: int = 0  # sends in calls that failed as a whole (the queue may have taken them)


class Sending(Protocol):
    """What a send needs of its service: the queue, the bucket named in messages, the retry settings."""

    queue: ReplayQueue | None
    bucket: str | None
    retries: int
    backoff_s: float
    sleep: Callable[[float], None]


def checked(
    scans: InvestigationIndex, request: ReplayRequest, selection: ReplaySelection
) -> Iterator[Receipt]:
    """The planned receipts read again (:meth:`InvestigationIndex.replay_receipts`), a stretch of
    :data:`CHECKPOINT_EVERY` at a time, each let through only once the fingerprint so far equals the
    selection's checkpoint there (the last stretch against the whole fingerprint): a list that changed
    since it was checked raises :class:`PlanChanged` before the stretch that differs is sent."""
    if selection.receipts is not None:
        # The store kept the planned receipts as it checked them (a plan of one stretch at most).
        yield from selection.receipts
        return
    fingerprint = Fingerprint()
    stretch: list[Receipt] = []

    def verified(last: bool) -> list[Receipt]:
        fingerprint.add(stretch)
        if last:
            same = (fingerprint.count, fingerprint.hexdigest()) == (
                selection.planned,
                selection.fingerprint,
            )
        else:
            n = len(fingerprint.checkpoints)
            same = (
                n <= len(selection.checkpoints)
                and fingerprint.checkpoints[-1] == selection.checkpoints[n - 1]
            )
        if not same:
            first = fingerprint.count - len(stretch) + 1
            raise PlanChanged(
                f"the index changed while the replay was sent: receipts {first:,} to "
                f"{fingerprint.count:,} are not the ones checked; the rest was not sent: preview again"
            )
        return stretch

    for r in scans.replay_receipts(request, missing=selection.missing_keys):
        stretch.append(r)
        if len(stretch) == CHECKPOINT_EVERY:
            yield from verified(last=False)
            stretch = []
    yield from verified(last=True)


def send(
    service: Sending,
    plan: ReplayPlan,
    items: Iterable[Receipt],
    progress: Progress,
    on_progress: Callable[[int, int, int], None] | None,
) -> str | None:
    """Send ``items`` in batches as they are read, counting into ``progress``; returns the last error,
    if any failed. Nothing but the batch in hand is held."""
    assert service.queue is not None
    queue = service.queue
    errors_in_a_row = 0
    last_error: str | None = None

    def send(batch: list[Receipt]) -> None:
        nonlocal errors_in_a_row, last_error
        bodies = [message_body(r, plan.replay_id, service.bucket) for r in batch]
        pending = list(range(len(bodies)))
        whole_call_failed = True
        for attempt in range(service.retries + 1):
            if attempt:
                service.sleep(service.backoff_s * 2 ** (attempt - 1))
            try:
                failures = queue.send_batch([bodies[i] for i in pending])
            except StoreError as exc:
                # The call may have been taken before it failed: its entries are unconfirmed, and
                # sending them again may deliver them twice (at least once, as the port says).
                progress.unconfirmed += len(pending)
                last_error = str(exc)
                continue
            whole_call_failed = False
            retry = []
            for f in failures:
                entry = pending[f.index]
                last_error = f"{f.code}: {f.message}"
                if f.sender_fault:
                    progress.failed += 1  # sending it again would fail again
                else:
                    retry.append(entry)
            progress.sent += len(pending) - len(failures)
            pending = retry
            if not pending:
                break
        progress.failed += len(pending)
        errors_in_a_row = errors_in_a_row + 1 if whole_call_failed else 0
        if on_progress is not None:
            on_progress(progress.sent, progress.failed, plan.would_send)

    batch: list[Receipt] = []
    try:
        for r in items:
            batch.append(r)
            if len(batch) == QUEUE_BATCH:
                send(batch)
                batch = []
                if errors_in_a_row >= MAX_BATCH_ERRORS_IN_A_ROW:
                    # The queue is down: the rest is not sent (nor read).
                    progress.failed = plan.would_send - progress.sent
                    break
    except PlanChanged:
        if batch:
            send(batch)  # read and checked before the stretch that changed
        raise
    else:
        if batch and errors_in_a_row >= MAX_BATCH_ERRORS_IN_A_ROW:
            progress.failed = plan.would_send - progress.sent
        elif batch:
            send(batch)
    if errors_in_a_row >= MAX_BATCH_ERRORS_IN_A_ROW and last_error:
        last_error = f"the replay queue failed {MAX_BATCH_ERRORS_IN_A_ROW} batches in a row: {last_error}"
    return last_error if progress.failed else None
