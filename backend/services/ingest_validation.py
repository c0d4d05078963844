"""Parsing and validation of one ingest request (DESIGN invariants 7 and 8): from its exact bytes to a
valid event with its identity (:class:`Prepared`), or :class:`Invalid` with the reason a sender can act on.

Holds :func:`prepare`, :func:`explain` (pydantic's errors as sentences) and :class:`Invalid`. Reads and
writes no store; :mod:`backend.services.ingest` stores what this accepts.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from backend.identity import canonical_json, event_id, raw_key, sha256_hex
from backend.model import (
    ENTITY_PATTERN,
    IDEMPOTENCY_PATTERN,
    MAX_BODY_BYTES,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    SOURCE_PATTERN,
    EventIn,
)
from backend.strictjson import DuplicateKey, unique_keys
from backend.times import TimeFormatError, fmt, parse_event_time

# A reason quotes at most a few short fragments of the request; this bounds it whatever a message holds.
MAX_REASON_CHARS = 1000
TOO_DEEP = f"nested too deeply: arrays and objects may nest at most {MAX_NESTING} levels"


class Invalid(ValueError):
    """A request that cannot be accepted; ``reason`` is the sentence stored and shown to the sender, at
    most ``MAX_REASON_CHARS`` characters.

    ``summary`` says the same without quoting anything the request holds (a field's value, a key): what a
    log may carry, since a value sent in the wrong place may be a secret (the default: ``reason``, for the
    reasons that quote nothing).
    """

    def __init__(self, reason: str, fields: dict[str, str] | None = None, summary: str | None = None) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        super().__init__(reason)
        self.reason = reason
        self.fields = fields or {}
        self.summary = summary or reason


@dataclass(frozen=True, slots=True)
class Prepared:
    """A valid event with its identity, ready to store."""

    event_id: str
    source: str
    event_type: str
    entity_id: str
    event_dt: datetime
    event_time: str
    day: str
    hour: str
    payload_sha: str
    raw_sha: str
    raw_key: str
    idempotency_key: str | None
    body: bytes


def _no_constants(name: str) -> Any:
    raise Invalid(f"invalid JSON: {name} is not a JSON number")


_decoder = json.JSONDecoder(object_pairs_hook=unique_keys, parse_constant=_no_constants)


def _field_text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 66 else text[:63] + "..."


_PATTERN_RULES = {
    "source": "must be 1-128 characters of A-Z a-z 0-9 _ . : -",
    "event_type": "must be 1-128 characters of A-Z a-z 0-9 _ . : -",
    "entity_id": "must be 1-256 characters with no control characters",
    "idempotency_key": "must be 1-256 characters with no control characters and no '|'",
}


def explain(error: ValidationError, *, values: bool = True) -> str:
    """One readable sentence per problem, fields in the order the model declares them. Without ``values``
    the offending values are left out (see :attr:`Invalid.summary`)."""
    parts: list[str] = []
    for err in error.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "event"
        kind = err["type"]
        value = err.get("input")
        shown = f" {_field_text(value)}" if values else ""
        if kind == "missing":
            parts.append(f"{field}: required field is missing")
        elif kind in ("string_type", "model_type"):
            want = "a string" if kind == "string_type" else "an object"
            parts.append(f"{field}: must be {want}, got {type(value).__name__}{shown}")
        elif kind == "string_pattern_mismatch":
            rule = _PATTERN_RULES.get(field, f"must match {err.get('ctx', {}).get('pattern')}")
            parts.append(f"{field}: {rule}" + (f", got{shown}" if values else ""))
        elif kind == "string_unicode":
            parts.append(f"{field}: contains an unpaired surrogate, which is not valid Unicode text")
        else:
            parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def _readable_fields(obj: Any) -> dict[str, str]:
    """Identifying fields of a rejected object that are plain short strings, to find it again later."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for name in ("source", "event_type", "entity_id"):
            value = obj.get(name)
            if isinstance(value, str) and 0 < len(value) <= 256:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    continue
                out[name] = value
    return out


def prepare(body: bytes) -> Prepared:
    """Validate one request body and compute its identity. Raises :class:`Invalid` with the reason."""
    obj = _parse(body)
    try:
        event = EventIn.model_validate(obj)
    except ValidationError as exc:
        raise Invalid(explain(exc), _readable_fields(obj), explain(exc, values=False)) from None
    except RecursionError:
        raise Invalid("payload: nested too deeply", _readable_fields(obj)) from None
    return _identify(
        event.source, event.event_type, event.entity_id, event.event_time, event.payload,
        event.idempotency_key, body,
    )  # fmt: skip


def _identify(
    source: str,
    event_type: str,
    entity_id: str,
    event_time_text: str,
    payload: Any,
    idempotency_key: str | None,
    body: bytes,
    canonical: bytes | None = None,
) -> Prepared:
    """The checks after the model (payload kind, time, canonical payload) and the identity; both
    :func:`prepare` and :func:`prepare_fast` end here, so an event has one identity whichever path read it."""
    fields = {"source": source, "event_type": event_type, "entity_id": entity_id}
    if not isinstance(payload, dict | list):
        raise Invalid(f"payload: must be a JSON object or array, got a JSON {_json_kind(payload)}", fields)
    try:
        event_dt = parse_event_time(event_time_text)
    except TimeFormatError as exc:
        raise Invalid(str(exc), fields, "event_time: not a supported ISO-8601 date-time") from None
    try:
        if canonical is None:
            canonical = canonical_json(payload)
    except UnicodeEncodeError:  # before ValueError, which it is a kind of
        raise Invalid(
            "payload: contains an unpaired surrogate, which is not valid Unicode text", fields
        ) from None
    except ValueError:
        raise Invalid("payload: numbers must be finite (a value overflows to Infinity)", fields) from None
    except RecursionError:
        raise Invalid("payload: nested too deeply", fields) from None
    if len(canonical) > MAX_PAYLOAD_BYTES:
        raise Invalid(
            f"payload: {len(canonical):,} bytes as canonical JSON; "
            f"the limit is {MAX_PAYLOAD_BYTES:,} bytes (256 KiB)",
            fields,
        )
    payload_sha = sha256_hex(canonical)
    eid = event_id(source, event_type, entity_id, event_dt, payload_sha, idempotency_key)
    event_time = fmt(event_dt)
    day = event_time[:10]
    return Prepared(
        event_id=eid,
        source=source,
        event_type=event_type,
        entity_id=entity_id,
        event_dt=event_dt,
        event_time=event_time,
        day=day,
        hour=event_time[11:13],
        payload_sha=payload_sha,
        raw_sha=sha256_hex(body),
        raw_key=raw_key(source, event_type, day, eid),
        idempotency_key=idempotency_key,
        body=body,
    )


# -- the fast path: plain events, read with orjson ------------------------------------------------------

# What the fast path reads at all; anything else (bigger, escaped strings, deeper, other fields or types)
# goes through :func:`prepare`, which is the specification and writes every rejection's reason.
FAST_MAX_BYTES = 16 * 1024
FAST_MAX_DEPTH = 16
_INT64 = float(2**63)
_FIELDS = frozenset({"source", "event_type", "entity_id", "event_time", "payload", "idempotency_key"})
# The model's patterns with \Z: Python's ``$`` also matches before a final newline, pydantic's does not.
_NAME = re.compile(SOURCE_PATTERN[1:-1] + r"\Z").match
_ENTITY = re.compile(ENTITY_PATTERN[1:-1] + r"\Z").match
_IDEMPOTENCY = re.compile(IDEMPOTENCY_PATTERN[1:-1] + r"\Z").match


def prepare_fast(body: bytes) -> Prepared | None:
    """:func:`prepare` for the plain case, or None when the request is anything but plain.

    Accept-only: a request it answers for is valid and gets exactly the :class:`Prepared` that
    :func:`prepare` gives it (same bytes, same identity); anything unusual (not a plain object of the
    event's fields with their types, a backslash anywhere, a duplicate key, a float that is not finite, a
    time or name the rules refuse, more than ``FAST_MAX_BYTES``...) answers None and is left to
    :func:`prepare`, which says why it is rejected, if it is.
    """
    if len(body) > FAST_MAX_BYTES or body[:1] != b"{" or b"\\" in body:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not _FIELDS.issuperset(obj):
        return None
    source = obj.get("source")
    event_type = obj.get("event_type")
    entity_id = obj.get("entity_id")
    event_time = obj.get("event_time")
    payload = obj.get("payload")
    key = obj.get("idempotency_key")
    if (
        type(source) is not str
        or type(event_type) is not str
        or type(entity_id) is not str
        or type(event_time) is not str
        or type(payload) is not dict
        or not _NAME(source)
        or not _NAME(event_type)
        or not _ENTITY(entity_id)
        or (key is not None and (type(key) is not str or not _IDEMPOTENCY(key)))
    ):
        return None
    # Without a backslash every '"' delimits a string, so the text holds count('"') / 2 strings. The
    # object read holds as many unless a duplicate key was dropped (orjson keeps the last one silently).
    strings, floats = _strings(payload, 1)
    if strings < 0:
        return None
    strings += len(obj) + 4 + (key is not None)
    if body.count(b'"') != 2 * strings:
        return None
    # Without floats (whose text orjson writes otherwise) and without anything to escape (no backslash in
    # the body, so no control character, quote or backslash in any string) orjson's sorted compact output
    # is byte for byte the canonical JSON.
    try:
        canonical = None if floats else orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        return _identify(source, event_type, entity_id, event_time, payload, key, body, canonical)
    except (Invalid, orjson.JSONEncodeError):
        return None


def _strings(value: Any, depth: int) -> tuple[int, bool]:
    """How many strings (keys and values) ``value`` holds, and whether it holds a float; -1 if it holds
    anything unusual (a float that is not finite or may have been an integer beyond 64 bits, nesting
    deeper than ``FAST_MAX_DEPTH``)."""
    if depth > FAST_MAX_DEPTH:
        return -1, False
    floats = False
    if type(value) is dict:
        n = len(value)
        items: Any = value.values()
    else:
        n = 0
        items = value
    for item in items:
        kind = type(item)
        if kind is str:
            n += 1
        elif kind is dict or kind is list:
            inner, inner_floats = _strings(item, depth + 1)
            if inner < 0:
                return -1, False
            n += inner
            floats = floats or inner_floats
        elif kind is float:
            # orjson reads an integer beyond 64 bits as a float, json as an int: leave those to prepare.
            if not math.isfinite(item) or abs(item) >= _INT64:
                return -1, False
            floats = True
        elif kind is not int and kind is not bool and item is not None:
            return -1, False
    return n, floats


def _parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object: Invalid for anything else (too large, blank, not UTF-8, not JSON, nested
    too deeply, not an object)."""
    if len(body) > MAX_BODY_BYTES:
        raise Invalid(f"request is {len(body):,} bytes; the limit is {MAX_BODY_BYTES:,} bytes (1 MiB)")
    if not body.strip():
        raise Invalid("blank: expected one JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"not UTF-8 text: invalid byte 0x{body[exc.start]:02x} at offset {exc.start}") from None
    if text.startswith("\ufeff"):
        raise Invalid("invalid JSON: the body starts with a byte order mark (U+FEFF); send UTF-8 without one")
    try:
        obj = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None
    except DuplicateKey as exc:
        raise Invalid(f"invalid JSON: {exc}", summary="invalid JSON: a duplicate key in an object") from None
    except Invalid:
        raise
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise Invalid(
            f"invalid JSON: {str(exc)[:200]}", summary="invalid JSON: a value cannot be read"
        ) from None
    # Nesting needs brackets: the count (C speed) spares the walk for all but bracket-heavy bodies.
    if text.count("[") + text.count("{") > MAX_NESTING and _nests_deeper_than(obj, MAX_NESTING):
        raise Invalid(TOO_DEEP, _readable_fields(obj))
    if not isinstance(obj, dict):
        raise Invalid(f"an event must be a JSON object, got a JSON {_json_kind(obj)}")
    return obj


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels; level by level, without
    recursion, so that it answers the same however deep the caller's stack is."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner: list[Any] = []
        for container in level:
            children = container.values() if isinstance(container, dict) else container
            inner.extend(child for child in children if isinstance(child, dict | list))
        level = inner
    return False


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
