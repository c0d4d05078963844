"""The kit's data shapes (pydantic v2): the incoming event, index records, rejections, ingest results.

Validation rules (DESIGN "Event model", invariant 8):

* ``source`` and ``event_type``: 1-128 characters of ``A-Z a-z 0-9 _ . : -``;
* ``entity_id``: 1-256 characters, no control characters;
* ``event_time``: ISO-8601 date-time; ``Z``, offsets and naive (= UTC) are accepted;
* ``payload``: a JSON object or array, at most 256 KiB as canonical JSON;
* ``idempotency_key`` (optional): 1-256 characters, no control characters and no ``|`` (the identity string
  uses ``|`` as its separator, so a ``|`` in both the entity and the key could forge another event's id);
* unknown top-level fields are allowed: they stay in the raw bytes and play no part in the identity.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SOURCE_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
# Cc (C0, DEL, C1) control characters are refused in identifiers; they would corrupt keys and terminals.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$"
IDEMPOTENCY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f|]{1,256}$"

MAX_BODY_BYTES = 1024 * 1024  # one request body / one JSON line
MAX_PAYLOAD_BYTES = 256 * 1024  # payload as canonical JSON, UTF-8

Name = Annotated[str, StringConstraints(pattern=SOURCE_PATTERN, strict=True)]
EntityId = Annotated[str, StringConstraints(pattern=_NO_CONTROL, strict=True)]
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_PATTERN, strict=True)]


class IngestStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"


class EventIn(BaseModel):
    """An event as a producer sends it. Times and payload are checked by the ingest service."""

    model_config = ConfigDict(extra="allow", frozen=True)

    source: Name
    event_type: Name
    entity_id: EntityId
    event_time: Annotated[str, Field(strict=True)]
    payload: Any
    idempotency_key: IdempotencyKey | None = None


class EventRecord(BaseModel):
    """One receipt of an event in the index: the accepted one, or a duplicate receipt of it.

    Field names are the original kit's (``ingest_lag_ms``, ``s3_key``, ...); the rest are additions.
    ``s3_key`` is where *this receipt's* bytes are stored: for a duplicate whose bytes equal the accepted
    ones it is the accepted event's key.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    status: IngestStatus
    source: str
    event_type: str
    entity_id: str
    event_time: str
    ingest_time: str
    ingest_lag_ms: int
    clock_skew: bool = False
    payload_sha: str
    day: str
    hour: str
    s3_key: str
    s3_bucket: str | None = None
    # The sha256 and size of this receipt's bytes; None only on rows the original kit wrote (read-only).
    raw_sha: str | None
    raw_size: int | None
    idempotency_key: str | None = None
    # Where this receipt came from: the request's origin (``api``, ``file:events.jsonl``...) and line.
    origin: str | None = None
    line: int | None = None
    # Assigned by the store on write: orders the receipts of one event, unique within the index.
    receipt: str | None = None


class Rejection(BaseModel):
    """A request that could not be accepted, quarantined with (a bounded prefix of) its bytes and why."""

    model_config = ConfigDict(frozen=True)

    received_at: str
    reason: str
    origin: str
    line: int | None = None
    size: int
    sha256: str
    data: bytes
    truncated: bool
    # Whatever identifying fields could be read, so rejections can be found by entity or source.
    source: str | None = None
    event_type: str | None = None
    entity_id: str | None = None
    rejection_id: str | None = None


class IngestResult(BaseModel):
    """What ingest answers for one request. Keeps the original kit's names; adds, renames none."""

    status: IngestStatus
    event_id: str | None = None
    ingest_lag_ms: int | None = None
    s3_key: str | None = None
    event_time: str | None = None
    ingest_time: str | None = None
    clock_skew: bool = False
    reason: str | None = None
    rejection_id: str | None = None
    line: int | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paged listing. ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None
