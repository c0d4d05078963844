"""Opaque keyset cursors: the last key of a page, tagged with the query it belongs to."""

from __future__ import annotations

import base64
import json
from typing import Any

from backend.errors import InvalidRequest


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps([kind, key], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, cursor: str, arity: int) -> list[Any]:
    """The key inside ``cursor``; InvalidRequest if it is damaged or belongs to another kind of query."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if tag != kind or not isinstance(key, list) or len(key) != arity:
            raise ValueError
    except (ValueError, TypeError, UnicodeError):
        raise InvalidRequest(
            f"cursor {cursor[:40]!r} is not a cursor of this listing (use the next_cursor of the same query)"
        ) from None
    return key
