"""Rows of the local event index as the kit's lean receipts and time texts: shared by the bulk scans
(:mod:`backend.adapters.local.investigate`) and the replay plans (:mod:`backend.adapters.local.replay_plan`).
"""

from __future__ import annotations

import functools
from datetime import date, timedelta
from typing import Any

from backend.identity import raw_key
from backend.model import Page
from backend.ports import ManifestEntry, Receipt

DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)

# The entity id is a parameter of scan_entity (``?``), so that scan joins only the small partitions table.
SCAN_COLUMNS = (
    "e.seq, e.event_id, e.receipt, p.source, p.event_type, {entity}, e.event_ms, e.ingest_ms, "
    "e.ingest_lag_ms, e.clock_skew, e.payload_sha, p.day, e.s3_key"
)
SCAN_FROM = "events e JOIN partitions p ON p.id = e.part"


@functools.lru_cache(maxsize=16384)
def day_text(day_number: int) -> str:
    return (_EPOCH_DAY + timedelta(days=day_number)).isoformat()


@functools.lru_cache(maxsize=16384)
def _day_prefix(day_number: int) -> str:
    return day_text(day_number) + "T"


@functools.cache
def _clock_texts() -> tuple[list[str], list[str]]:
    """``HH:MM:SS`` for every second of a day and ``.mmmZ`` for every millisecond (built once, ~5 MB):
    formatting a time is then two divisions and three lookups."""
    seconds = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    millis = [f".{n:03d}Z" for n in range(1000)]
    return seconds, millis


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as the stored time form, ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (no datetime)."""
    seconds, millis = _clock_texts()
    day, rest = divmod(ms, DAY_MS)
    second, milli = divmod(rest, 1000)
    return _day_prefix(day) + seconds[second] + millis[milli]


def receipts(page: Page[Any]) -> Page[Receipt]:
    """A page of rows as receipts: one tight loop, as this runs once per row of every bulk scan."""
    seconds, millis = _clock_texts()
    prefix = _day_prefix
    out: list[Receipt] = []
    append = out.append
    for (
        _,
        eid,
        receipt,
        source,
        event_type,
        entity,
        event_ms,
        ingest_ms,
        lag,
        skew,
        psha,
        day,
        key,
    ) in page.items:
        event_id = eid.hex()
        d, rest = divmod(event_ms, DAY_MS)
        s, ms = divmod(rest, 1000)
        event_time = prefix(d) + seconds[s] + millis[ms]
        d, rest = divmod(ingest_ms, DAY_MS)
        s, ms = divmod(rest, 1000)
        append(
            Receipt(
                event_id,
                receipt == 0,
                source,
                event_type,
                entity,
                event_time,
                prefix(d) + seconds[s] + millis[ms],
                lag,
                skew == 1,
                psha.hex(),
                key if key is not None else raw_key(source, event_type, day, event_id),
                None,
                str(receipt),
            )
        )
    return Page(items=out, next_cursor=page.next_cursor)


def manifest_entries(rows: list[Any]) -> list[ManifestEntry]:
    """``(event_id, payload_sha, ingest_ms, ingest_lag_ms, partition)`` rows as manifest entries, in their
    order, for a recompute's window: each ingest time formatted once (a batch's events share their
    milliseconds), each entry made as the tuple it is."""
    seconds, millis = _clock_texts()
    prefix = _day_prefix
    texts: dict[int, str] = {}
    for ingest_ms in {r[2] for r in rows}:
        d, rest = divmod(ingest_ms, DAY_MS)
        s, ms = divmod(rest, 1000)
        texts[ingest_ms] = prefix(d) + seconds[s] + millis[ms]
    new = tuple.__new__
    return [
        new(ManifestEntry, (eid.hex(), psha.hex(), texts[ingest_ms], lag))
        for eid, psha, ingest_ms, lag, _ in rows
    ]
