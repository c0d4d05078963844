"""The selection of a replay, receipt by receipt, over any :class:`InvestigationIndex` and
:class:`RawCatalog`: the definition of what a replay plan lists (and what ``ReplayService.execute`` sends).

Adapters may answer :meth:`InvestigationIndex.select_replay` and :meth:`InvestigationIndex.replay_receipts`
faster (the local one in SQL, without a receipt per row); they must answer exactly this (a contract test
compares them). Nothing here holds the scope: receipts are scanned a page at a time and their raw keys
checked a chunk at a time, so memory is bounded by a page whatever the window's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from backend.errors import Cancelled
from backend.model import IngestStatus, ReplayRequest
from backend.ports import InvestigationIndex, RawCatalog, Receipt, ReplaySelection
from backend.replay_fingerprint import Fingerprint
from backend.times import day_range

SCAN_PAGE = 5000
RAW_CHECK_CHUNK = 1000
# A selection keeps at most this many missing raw keys for its execution (beyond, it checks them again).
MAX_MISSING_KEPT = 10_000

Progress = Callable[[int, int | None], None]
"""``progress(receipts read so far, receipts in scope when known)``."""
StopCheck = Callable[[], bool]
"""Asked between pages: True stops the read with :class:`backend.errors.Cancelled`."""


@dataclass(slots=True)
class Tally:
    """What a pass over a scope counted: receipts scanned, left out by filters or as duplicates, raw keys
    checked (``used``) and found missing, eligible receipts in all."""

    scanned: int = 0
    filtered: int = 0
    duplicate: int = 0
    eligible: int = 0
    used: int = 0
    missing_raw: int = 0
    planned: int = 0
    missing_keys: set[str] = field(default_factory=set)


def planned_receipts(
    scans: InvestigationIndex,
    catalog: RawCatalog,
    request: ReplayRequest,
    tally: Tally | None = None,
    *,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    missing: frozenset[str] | None = None,
) -> Iterator[Receipt]:
    """The planned receipts of a normalized ``request``, in order: eligible ones (past the filters,
    duplicates only when included) whose raw bytes exist, up to the limit. Raw keys are checked in order
    until the limit is filled; the rest of the scope is still read, to count it into ``tally``. With
    ``missing`` (the keys an earlier pass found missing) the catalog is not asked again: raw bytes are never
    deleted, so a key found then is still there, and one missing then is left out as it was."""
    tally = tally if tally is not None else Tally()
    filters = has_filters(request)
    pending: list[Receipt] = []  # eligible receipts whose raw keys are not checked yet, in order

    def need() -> int:
        # Only as many raw keys are checked as it takes to fill the limit: chunks shrink near it.
        return min(RAW_CHECK_CHUNK, request.limit - tally.planned)

    def check(chunk: list[Receipt]) -> list[Receipt]:
        tally.used += len(chunk)
        gone = missing if missing is not None else catalog.missing([r.s3_key for r in chunk])
        present = [r for r in chunk if r.s3_key not in gone]
        if len(present) < len(chunk):
            tally.missing_keys.update(r.s3_key for r in chunk if r.s3_key in gone)
        tally.missing_raw += len(chunk) - len(present)
        tally.planned += len(present)
        return present

    for r in scan(scans, request, progress=progress, should_stop=should_stop):
        tally.scanned += 1
        if filters and not passes(r, request):
            tally.filtered += 1
            continue
        if not r.accepted and not request.include_duplicates:
            tally.duplicate += 1
            continue
        tally.eligible += 1
        if tally.planned >= request.limit:
            continue  # counted (over the limit), never checked
        pending.append(r)
        if len(pending) >= need():
            chunk, pending = pending[: need()], pending[need() :]
            yield from check(chunk)
    while pending and tally.planned < request.limit:
        chunk, pending = pending[: need()], pending[need() :]
        yield from check(chunk)


def select_by_scans(
    scans: InvestigationIndex,
    catalog: RawCatalog,
    request: ReplayRequest,
    *,
    sample: int,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    keep: int = 0,
) -> ReplaySelection:
    """The selection of a normalized ``request``, read once and never held: counts, days, windows, the
    first ``sample`` receipts and the fingerprint (with its checkpoints) built as the receipts go by; the
    planned receipts themselves too when there are at most ``keep``."""
    tally = Tally()
    by_day: dict[str, int] = {}
    windows: set[tuple[str, str]] = set()
    entities: set[str] = set()
    first: str | None = None
    last: str | None = None
    kept: list[Receipt] = []
    fingerprint = Fingerprint()
    batch: list[Receipt] = []
    receipts = planned_receipts(scans, catalog, request, tally, progress=progress, should_stop=should_stop)
    for r in receipts:
        day = r.event_time[:10]
        by_day[day] = by_day.get(day, 0) + 1
        windows.add((r.entity_id, day))
        entities.add(r.entity_id)
        first = r.event_time if first is None or r.event_time < first else first
        last = r.event_time if last is None or r.event_time > last else last
        if len(kept) < max(sample, keep + 1):
            kept.append(r)
        batch.append(r)
        if len(batch) >= RAW_CHECK_CHUNK:
            fingerprint.add(batch)
            batch = []
    fingerprint.add(batch)
    return ReplaySelection(
        scanned=tally.scanned,
        filtered=tally.filtered,
        duplicate=tally.duplicate,
        missing_raw=tally.missing_raw,
        over_limit=tally.eligible - tally.used,
        planned=tally.planned,
        by_day=dict(sorted(by_day.items())),
        windows=sorted(windows),
        entities=len(entities),
        first_event_time=first,
        last_event_time=last,
        sample=kept[:sample],
        fingerprint=fingerprint.hexdigest(),
        checkpoints=tuple(fingerprint.checkpoints),
        missing_keys=frozenset(tally.missing_keys) if len(tally.missing_keys) <= MAX_MISSING_KEPT else None,
        receipts=kept if keep and len(kept) <= keep else None,
    )


def scan(
    scans: InvestigationIndex,
    request: ReplayRequest,
    *,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Iterator[Receipt]:
    """Every receipt in the scope of ``request``, page by page, in the index's order. ``progress`` hears
    of each page, ``should_stop`` is asked before each (Cancelled when it answers True)."""
    read = 0

    def pages() -> Iterator[list[Receipt]]:
        after: str | None = None
        if request.entity_id is not None:
            assert request.start_time is not None and request.end_time is not None
            while True:
                page = scans.scan_entity(
                    request.entity_id, request.start_time, request.end_time, limit=SCAN_PAGE, after=after
                )
                yield page.items
                if page.next_cursor is None:
                    return
                after = page.next_cursor
        assert request.source and request.event_type and request.start_day and request.end_day
        for day in day_range(request.start_day, request.end_day):
            after = None
            while True:
                page = scans.scan_partition(
                    request.source, request.event_type, day, limit=SCAN_PAGE, after=after
                )
                yield page.items
                if page.next_cursor is None:
                    break
                after = page.next_cursor

    for items in pages():
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped after {read:,} receipts read")
        read += len(items)
        yield from items
        if progress is not None:
            progress(read, None)


def has_filters(request: ReplayRequest) -> bool:
    """Whether any receipt in scope can be filtered out (a status, or a source/type on an entity scope)."""
    return request.status is not None or (
        request.entity_id is not None and (request.source is not None or request.event_type is not None)
    )


def passes(r: Receipt, request: ReplayRequest) -> bool:
    """Whether ``r`` passes the filters of ``request``."""
    if request.status is IngestStatus.ACCEPTED and not r.accepted:
        return False
    if request.status is IngestStatus.DUPLICATE and r.accepted:
        return False
    if request.entity_id is not None:
        if request.source is not None and r.source != request.source:
            return False
        if request.event_type is not None and r.event_type != request.event_type:
            return False
    return True
