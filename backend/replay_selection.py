"""The selection of a replay, receipt by receipt, over any :class:`InvestigationIndex` and
:class:`RawCatalog`: the definition of what a replay plan lists (and what ``ReplayService.execute`` sends).

Adapters may answer :meth:`InvestigationIndex.select_replay` faster (the local one in SQL, without a
receipt per row); they must answer exactly this (a contract test compares them).
"""

from __future__ import annotations

from collections.abc import Iterator

from backend.model import IngestStatus, ReplayRequest
from backend.ports import InvestigationIndex, RawCatalog, Receipt, ReplaySelection
from backend.replay_fingerprint import fingerprint
from backend.times import day_range

SCAN_PAGE = 5000
RAW_CHECK_CHUNK = 1000


def select_by_scans(
    scans: InvestigationIndex, catalog: RawCatalog, request: ReplayRequest, *, sample: int
) -> tuple[ReplaySelection, list[Receipt]]:
    """The selection of a normalized ``request`` and its planned receipts, in order."""
    scanned = filtered = duplicate = missing_raw = 0
    eligible: list[Receipt] = []
    filters = has_filters(request)
    for r in scan(scans, request):
        scanned += 1
        if filters and not passes(r, request):
            filtered += 1
        elif not r.accepted and not request.include_duplicates:
            duplicate += 1
        else:
            eligible.append(r)
    # Only as many raw keys are checked as it takes to fill the limit.
    planned: list[Receipt] = []
    used = 0
    while used < len(eligible) and len(planned) < request.limit:
        chunk = eligible[used : used + min(RAW_CHECK_CHUNK, request.limit - len(planned))]
        used += len(chunk)
        missing = catalog.missing([r.s3_key for r in chunk])
        for r in chunk:
            if r.s3_key in missing:
                missing_raw += 1
            else:
                planned.append(r)
    by_day: dict[str, int] = {}
    windows: set[tuple[str, str]] = set()
    for r in planned:
        day = r.event_time[:10]
        by_day[day] = by_day.get(day, 0) + 1
        windows.add((r.entity_id, day))
    times = [r.event_time for r in planned]
    selection = ReplaySelection(
        scanned=scanned,
        filtered=filtered,
        duplicate=duplicate,
        missing_raw=missing_raw,
        over_limit=len(eligible) - used,
        planned=len(planned),
        by_day=dict(sorted(by_day.items())),
        windows=sorted(windows),
        entities=len({r.entity_id for r in planned}),
        first_event_time=min(times) if times else None,
        last_event_time=max(times) if times else None,
        sample=planned[:sample],
        fingerprint=fingerprint(planned),
    )
    return selection, planned


def scan(scans: InvestigationIndex, request: ReplayRequest) -> Iterator[Receipt]:
    """Every receipt in the scope of ``request``, page by page, in the index's order."""
    after: str | None = None
    if request.entity_id is not None:
        assert request.start_time is not None and request.end_time is not None
        while True:
            page = scans.scan_entity(
                request.entity_id, request.start_time, request.end_time, limit=SCAN_PAGE, after=after
            )
            yield from page.items
            if page.next_cursor is None:
                return
            after = page.next_cursor
    assert request.source and request.event_type and request.start_day and request.end_day
    for day in day_range(request.start_day, request.end_day):
        after = None
        while True:
            page = scans.scan_partition(request.source, request.event_type, day, limit=SCAN_PAGE, after=after)
            yield from page.items
            if page.next_cursor is None:
                break
            after = page.next_cursor


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
