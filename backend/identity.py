"""Event identity, exactly as the original kit computes it, so ids match a stack it populated.

* with ``idempotency_key``: ``sha256("IDEMPOTENCY|{source}|{event_type}|{entity_id}|{key}")``
* otherwise: ``sha256("HASH|{source}|{event_type}|{entity_id}|{event_time_iso}|{payload_sha}")``

where ``payload_sha`` is the sha256 of the payload as canonical JSON (sorted keys, ``,``/``:`` separators,
UTF-8, no ASCII escaping) and ``event_time_iso`` is the UTC time as Python's isoformat with ``+00:00``
replaced by ``Z``. All hashes are lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from backend.times import identity_iso

_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def canonical_json(payload: Any) -> bytes:
    """Canonical JSON bytes of ``payload``. Raises ValueError for NaN/Infinity, UnicodeEncodeError for lone
    surrogates, RecursionError for absurd nesting."""
    return _canonical(payload).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A payload whose canonical JSON is at most this many bytes travels with its receipt (EventRecord.payload):
# half of DynamoDB's 1 KB write unit (docs/aws.md, "Payloads in the index").
INLINE_PAYLOAD_MAX = 512
# Bodies longer than this are not parsed again for it (their payload is almost never that small).
_INLINE_BODY_MAX = 4096


def inline_payload(body: bytes, payload_sha: str) -> str | None:
    """The canonical JSON of the payload of the valid request ``body`` when it is at most
    :data:`INLINE_PAYLOAD_MAX` bytes and its sha256 is ``payload_sha``; else None."""
    if len(body) > _INLINE_BODY_MAX:
        return None
    try:
        canonical = canonical_json(json.loads(body)["payload"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if len(canonical) > INLINE_PAYLOAD_MAX or sha256_hex(canonical) != payload_sha:
        return None
    return canonical.decode("utf-8")


def carried_payload(text: str | None, payload_sha: str) -> tuple[bool, Any]:
    """``(True, payload)`` when ``text`` is a carried payload whose sha256 is ``payload_sha``; else
    ``(False, None)``: the reader then reads the raw bytes, which stay the truth."""
    if text is None:
        return False, None
    data = text.encode("utf-8")
    if sha256_hex(data) != payload_sha:
        return False, None
    try:
        return True, json.loads(data)
    except ValueError:
        return False, None


def event_id(
    source: str,
    event_type: str,
    entity_id: str,
    event_time: datetime,
    payload_sha: str,
    idempotency_key: str | None = None,
) -> str:
    if idempotency_key is not None:
        basis = f"IDEMPOTENCY|{source}|{event_type}|{entity_id}|{idempotency_key}"
    else:
        basis = f"HASH|{source}|{event_type}|{entity_id}|{identity_iso(event_time)}|{payload_sha}"
    return sha256_hex(basis.encode("utf-8"))


def raw_key(source: str, event_type: str, day: str, event_id: str) -> str:
    """Where an event's raw bytes live: derived from its identity alone, Hive-style partitions (Athena).

    ``source`` and ``event_type`` cannot hold ``/`` or ``=`` and ``event_id`` is hex, so no value can
    forge another event's key.
    """
    return f"raw/source={source}/event_type={event_type}/event_date={day}/event_id={event_id}.json"


def receipt_key(source: str, event_type: str, day: str, event_id: str, raw_sha: str) -> str:
    """Where a receipt's bytes live when they differ from the bytes first stored for its event id (an
    idempotency-key retry with another payload, extra fields that changed). Content-addressed, kept
    outside ``raw/`` so that a table over ``raw/`` sees each event once."""
    return (
        f"receipts/source={source}/event_type={event_type}/event_date={day}/event_id={event_id}/"
        f"sha256={raw_sha}.json"
    )
