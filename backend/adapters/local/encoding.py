"""How the workspace database holds values that the model shows as text.

Times are stored as integer milliseconds since the Unix epoch (UTC), so they sort and compare as numbers
and take a few bytes; the model shows them in the fixed stored form ``YYYY-MM-DDTHH:MM:SS.mmmZ``. Event ids
are stored as their 32 bytes. A page cursor carries the key of the last row as JSON values; the
``cursor_*`` functions turn those back into column values and raise ValueError for anything a cursor of
that query cannot hold (``Database.page`` answers that as a damaged cursor).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.times import fmt, parse_iso

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@functools.lru_cache(maxsize=4096)
def _day_ms(day: str) -> int:
    return (datetime.fromisoformat(day).replace(tzinfo=UTC) - _EPOCH) // _MS


def stored_ms(stored: str) -> int:
    """A time the ingest service formatted (``fmt``), as integer milliseconds since the epoch."""
    if len(stored) == 24 and stored[10] == "T" and stored[23] == "Z" and stored[19] == ".":
        # The fixed stored form, YYYY-MM-DDTHH:MM:SS.mmmZ: arithmetic, no parsing (a hot path of ingest).
        try:
            return (
                _day_ms(stored[:10])
                + int(stored[11:13]) * 3_600_000
                + int(stored[14:16]) * 60_000
                + int(stored[17:19]) * 1000
                + int(stored[20:23])
            )
        except ValueError:
            pass
    return to_ms(stored)


def to_ms(stored: str) -> int:
    """Any ISO date-time (a stored-time string, a window bound) as integer milliseconds since the epoch."""
    try:
        value = datetime.fromisoformat(stored)
    except ValueError:
        value = parse_iso(stored)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def from_ms(ms: int) -> str:
    """Milliseconds since the epoch as the stored time form (``fmt``)."""
    return fmt(_EPOCH + timedelta(milliseconds=ms))


def event_id_blob(event_id: str) -> bytes | None:
    """An event id as stored (32 bytes), or None if it cannot be an event id at all."""
    if len(event_id) != 64:
        return None
    try:
        return bytes.fromhex(event_id)
    except ValueError:
        return None


def cursor_event_id(value: Any) -> bytes:
    """A cursor's event id as stored; ValueError if it is not one."""
    blob = event_id_blob(value) if isinstance(value, str) else None
    if blob is None:
        raise ValueError("not an event id")
    return blob


def cursor_text(value: Any) -> str:
    """A cursor's text value (a time or a name); ValueError if it is not text."""
    if not isinstance(value, str):
        raise ValueError("not a time")
    return value
