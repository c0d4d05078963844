"""The kit's data shapes (pydantic v2): the incoming event, index records, rejections, ingest results.

Validation rules (DESIGN "Event model", invariant 8):

* ``source`` and ``event_type``: 1-128 characters of ``A-Z a-z 0-9 _ . : -``;
* ``entity_id``: 1-256 characters, no control characters;
* ``event_time``: ISO-8601 date-time; ``Z``, offsets and naive (= UTC) are accepted;
* ``payload``: a JSON object or array, at most 256 KiB as canonical JSON;
* ``idempotency_key`` (optional): 1-256 characters, no control characters and no ``|`` (the identity string
  uses ``|`` as its separator, so a ``|`` in both the entity and the key could forge another event's id);
* unknown top-level fields are allowed: they stay in the raw bytes and play no part in the identity;
* the whole event nests arrays and objects at most ``MAX_NESTING`` (128) levels deep, the event object
  itself being level 1. Python's JSON reader gives up somewhere below 1,000 levels, and the deeper its
  caller's stack the sooner; a fixed bound gives every entry point (Lambda, ``pik ingest``, ``pik serve``)
  the same answer and lets every reader (processor, console) read back what was accepted.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SOURCE_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
# Cc (C0, DEL, C1) control characters are refused in identifiers; they would corrupt keys and terminals.
ENTITY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$"
_NO_CONTROL = ENTITY_PATTERN
IDEMPOTENCY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f|]{1,256}$"

MAX_BODY_BYTES = 1024 * 1024  # one request body / one JSON line
MAX_PAYLOAD_BYTES = 256 * 1024  # payload as canonical JSON, UTF-8
MAX_NESTING = 128  # levels of arrays and objects in one event, the event object included

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
    # The identity of the delivery this receipt records (sha256 hex; set by ingest, not by the original
    # kit): a store that retries a write after an ambiguous failure recognises its own earlier receipt by
    # it instead of adding another one.
    delivery: str | None = None
    # The payload as canonical JSON (its sha256 is ``payload_sha``) when it is small enough to travel with
    # the receipt (``backend.identity.INLINE_PAYLOAD_MAX``): a store may keep it in the index so that a
    # recompute reads no raw object. None when larger or not known; the raw bytes stay the truth.
    payload: str | None = Field(default=None, exclude=True, repr=False)


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


# -- Replay (DESIGN invariant 4) ----------------------------------------------------------------------------


class ReplayRequest(BaseModel):
    """What to replay: the seed's request (field names unchanged) or a source/type over days.

    Scopes: ``entity_id`` with the window ``[start_time, end_time)``; or ``source`` + ``event_type`` over the
    event days ``[start_day, end_day)`` (the lag index). With an entity, ``source`` and ``event_type`` are
    filters. ``status`` keeps only ACCEPTED or only DUPLICATE receipts. ``include_duplicates`` false sends
    one message per distinct event (its accepted receipt); true sends one per receipt, to reproduce a
    duplicate storm downstream. Unknown fields are refused: a misspelt filter must not widen a replay.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    source: str | None = None
    event_type: str | None = None
    start_day: str | None = None
    end_day: str | None = None
    status: IngestStatus | None = None
    limit: int = Field(500, ge=1)
    include_duplicates: bool = False


class ReplaySkips(BaseModel):
    """Why matching receipts are not in a replay plan, by reason."""

    duplicate: int = 0  # duplicate receipts, when duplicates are not included
    missing_raw: int = 0  # no bytes at the receipt's s3_key
    over_limit: int = 0  # eligible beyond the limit (their raw bytes are not checked)
    filtered: int = 0  # in scope, but not of the filtered event_type / source / status


class ReplayMessage(BaseModel):
    """One replay message: the seed's shape plus ``replay_id``; ``receipt`` only for a duplicate receipt."""

    event_id: str
    entity_id: str
    event_time: str
    s3_bucket: str | None
    s3_key: str
    replay_id: str
    receipt: str | None = None


class ReplayOutcome(StrEnum):
    DRY_RUN = "DRY_RUN"  # planned, nothing sent
    REFUSED = "REFUSED"  # over the size guard without force, or the plan changed since its preview
    RUNNING = "RUNNING"  # sending; a record still RUNNING later was interrupted
    SENT = "SENT"  # every planned message was sent
    PARTIAL = "PARTIAL"  # some messages could not be sent after retries
    FAILED = "FAILED"  # messages were planned and none could be sent
    INTERRUPTED = "INTERRUPTED"  # stopped part-way (Ctrl-C); the counts say how far it got


class ProjectedVersion(BaseModel):
    """What a processor run after a replay would make of one (entity, day, metric): the current version
    and value, the projected ones, and why (a what-if computed by the processor's own dry run)."""

    entity_id: str
    day: str
    metric: str
    current_version: int | None  # None: the window has no version yet
    current_value: int | float | None
    projected_version: int  # the latest version once processed (the current one when unchanged)
    projected_value: int | float | None
    delta: int | float | None  # projected - current; None when either is not a number
    new_version: bool  # the processor would append a version
    current_inputs: int | None
    projected_inputs: int
    reason: str  # one sentence: events added late, duplicates excluded, unchanged...


class ReplayPlan(BaseModel):
    """A dry run's answer: what a replay of ``request`` would send, and what it would touch.

    ``windows`` are the (entity, day) aggregate windows a processor run would recompute;
    ``windows_with_versions`` how many of them already have aggregate versions (None: not known here).
    ``fingerprint`` identifies the exact list of messages, so an execution can insist on the previewed plan.
    ``why`` explains, in sentences, anything a user should know (always when nothing would be sent).
    """

    replay_id: str
    request: ReplayRequest
    created_at: str
    scanned: int
    matched: int
    would_send: int
    skipped: ReplaySkips
    by_day: dict[str, int]
    entities: int
    windows: int
    windows_with_versions: int | None
    first_event_time: str | None
    last_event_time: str | None
    sample: list[ReplayMessage]
    fingerprint: str
    needs_force: bool
    why: list[str]
    # The what-if: the versions a processor run would produce for the first ``windows_projected`` windows
    # (every metric of each), computed without writing; ``windows_not_projected`` more are only counted.
    # ``windows_projected`` is None when no projection was made (no aggregate store, or an execution).
    projected: list[ProjectedVersion] = Field(default_factory=list)
    windows_projected: int | None = None
    windows_not_projected: int = 0


class ReplayAudit(BaseModel):
    """The audit record of one replay, dry or real: scope, who, when, counts and outcome."""

    replay_id: str
    outcome: ReplayOutcome
    dry_run: bool
    actor: str
    started_at: str
    finished_at: str | None = None
    request: ReplayRequest
    scanned: int = 0
    matched: int = 0
    would_send: int = 0
    sent: int = 0
    failed: int = 0
    # Sends in batch calls that failed as a whole: the queue may have taken any of them before the error
    # (its answer lost), so it holds between ``sent`` and ``sent + unconfirmed`` messages of this replay
    # (SQS's own at-least-once delivery aside).
    unconfirmed: int = 0
    skipped: ReplaySkips = Field(default_factory=ReplaySkips)
    entities: int = 0
    windows: int = 0
    windows_with_versions: int | None = None
    fingerprint: str | None = None
    forced: bool = False
    error: str | None = None


# -- Aggregates (DESIGN invariant 5) ------------------------------------------------------------------------


class MetricKind(StrEnum):
    COUNT = "count"  # events
    SUM = "sum"  # of a numeric payload field
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    DISTINCT = "distinct"  # distinct values of a payload field


class MetricSpec(BaseModel):
    """One metric computed per (entity, day) over the day's accepted events (each event once).

    ``field`` is a payload field, dotted for nested objects (``device.battery``); every kind but ``count``
    needs one. ``event_type`` and ``source``, when set, keep only those events.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    kind: MetricKind
    field: str | None = Field(None, min_length=1, max_length=256)
    event_type: Name | None = None
    source: Name | None = None


class AggregateVersion(BaseModel):
    """Version ``version`` of one (entity, day, metric): its value and everything needed to explain it.

    The input manifest (event id, payload hash, ingest time and lag of every input) is stored with the
    version under ``inputs_hash``, the sha256 of its sorted ``event_id:payload_sha`` lines.
    """

    model_config = ConfigDict(frozen=True)

    entity_id: str
    day: str
    metric: str
    version: int = Field(ge=1)
    value: int | float | None
    input_count: int
    values_used: int  # inputs that gave the metric a value (count: all of them)
    inputs_hash: str
    definition: MetricSpec
    definition_hash: str
    computed_at: str
    window_start: str
    window_end: str
    replay_ids: list[str] = Field(default_factory=list)  # the replays whose messages caused this version
    previous_version: int | None = None
    previous_value: int | float | None = None
    sample_event_ids: list[str] = Field(default_factory=list)  # the original kit's attribute
    # Accepted events in the whole window when this version was computed. The window only grows, so while
    # it still holds as many, nothing arrived since and a recompute can stop at a count.
    window_events: int | None = None
