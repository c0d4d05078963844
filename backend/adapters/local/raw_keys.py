"""Raw keys as the workspace stores them: an identity key as its partition and event id, any other as text.

An identity key (``backend.identity.raw_key``) is ``raw/source=S/event_type=T/event_date=D/event_id=ID.json``:
S and T cannot hold ``/`` or ``=`` and ID is 64 lowercase hex digits, so the text parses back into exactly
one (source, event_type, day, event id), and that is how the raw table keeps it (the partition by number,
the id as 32 bytes). A key is taken apart only if putting the parts back together gives the same text.
"""

from __future__ import annotations

import re

from backend.identity import raw_key

_IDENTITY = re.compile(
    r"raw/source=([A-Za-z0-9_.:-]{1,128})/event_type=([A-Za-z0-9_.:-]{1,128})"
    r"/event_date=(\d{4}-\d{2}-\d{2})/event_id=([0-9a-f]{64})\.json"
)


def parse_identity_key(key: str) -> tuple[tuple[str, str, str], bytes] | None:
    """``((source, event_type, day), event id bytes)`` of an identity key; None for any other key."""
    found = _IDENTITY.fullmatch(key)
    if found is None:
        return None
    source, event_type, day, eid = found.groups()
    if raw_key(source, event_type, day, eid) != key:
        return None
    return (source, event_type, day), bytes.fromhex(eid)
