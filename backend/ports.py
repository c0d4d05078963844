"""The store interfaces the services use. Each adapter (local SQLite, AWS) implements all of them and is
held to them by one contract suite (``tests/contract``).

The write methods take batches: the local adapter commits a batch in one transaction, the AWS adapter
spends at most a put and a transaction per event. Every method either completes or raises
:class:`backend.errors.StoreError`; after an error, retrying the same call is always safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from backend.model import (
    AggregateVersion,
    EventRecord,
    IngestStatus,
    Page,
    Rejection,
    ReplayAudit,
    ReplayRequest,
)


@dataclass(frozen=True, slots=True)
class RawObject:
    key: str
    data: bytes
    sha256: str


class RawPutStatus(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # the key was taken; nothing was written


@dataclass(frozen=True, slots=True)
class RawPut:
    key: str
    status: RawPutStatus
    # The sha256 of the bytes now under the key (ours if CREATED). None when the key was taken and the store
    # cannot tell what it holds without another call (S3 refuses a conditional put without saying).
    stored_sha256: str | None


class Claim(StrEnum):
    """What the caller of :meth:`EventIndex.record` knows about where a record's bytes are."""

    STORED = "stored"  # this record's bytes are at its s3_key (the caller stored or verified them)
    SEEN = "seen"  # as STORED, and the key was already taken: probably a duplicate (only saves calls)
    # The s3_key was taken and the caller could not check whose bytes are there. The index writes the
    # receipt only if the event's accepted receipt points at the same key with the same sha256.
    UNVERIFIED = "unverified"


class Recorded(StrEnum):
    """The outcome of recording one receipt. The first two equal the IngestStatus values."""

    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    # Nothing written (UNVERIFIED claims only): the accepted receipt's bytes at this s3_key are other bytes.
    # Store these bytes elsewhere and record again.
    MISPLACED = "MISPLACED"
    # Nothing written (UNVERIFIED claims only): the index cannot vouch for the bytes at s3_key (the event
    # was never accepted, or its accepted receipt points at another key); check them and record again.
    UNSEEN = "UNSEEN"


@dataclass(frozen=True, slots=True)
class PartitionCount:
    source: str
    event_type: str
    accepted: int
    duplicate: int


@dataclass(frozen=True, slots=True)
class IndexStats:
    accepted: int
    duplicate: int
    rejected: int
    entities: int
    first_event_time: str | None
    last_event_time: str | None
    partitions: list[PartitionCount]


class RawStore(Protocol):
    """Immutable raw bytes by key. There is no overwrite and no delete: a second put of a key is refused
    by the store itself and reported as EXISTS with the sha256 of what is already there."""

    location: str  # bucket name, or the workspace path

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        """Store each object unless its key exists. Results in input order; within one call an earlier
        object wins over a later one with the same key. Returns only once the created bytes are durable."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""
        ...

    def sha256(self, key: str) -> str | None:
        """The sha256 of the bytes under ``key`` (without reading them where the store keeps it), or None."""
        ...


class EventIndex(Protocol):
    """The index of receipts (accepted events and duplicate receipts) and the quarantine of rejections."""

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        """Record one receipt per element, in order, and say for each whether it was the event id's single
        ACCEPTED receipt or a DUPLICATE. The ``status`` and ``receipt`` fields of the input are ignored.

        Exactly one receipt per event id is ever ACCEPTED, whatever the interleaving of concurrent calls;
        every other receipt is kept as its own DUPLICATE record. Nothing is overwritten.

        ``claims`` (default: all STORED) say what the caller knows of each record's bytes; only UNVERIFIED
        records can come back MISPLACED or UNSEEN, and then nothing was written for them.
        """
        ...

    def quarantine(self, rejections: Sequence[Rejection]) -> list[str]:
        """Store rejected requests (bounded bytes and reason); returns their ids in order."""
        ...

    def get_accepted(self, event_id: str) -> EventRecord | None:
        """The ACCEPTED receipt of ``event_id``, or None if it was never accepted."""
        ...

    def receipts(self, event_id: str) -> list[EventRecord]:
        """Every receipt of ``event_id``: the accepted one first, then duplicates in arrival order."""
        ...

    def query_entity(
        self,
        entity_id: str,
        start: str,
        end: str,
        *,
        status: IngestStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[EventRecord]:
        """Receipts of one entity with ``start <= event_time < end``, in event-time order (ties by event
        id, then receipt). ``start`` and ``end`` are ISO-8601 date-times (the stored form is one); anything
        else raises InvalidRequest. ``after`` is a ``next_cursor`` from a previous page of the same query."""
        ...

    def query_partition(
        self,
        source: str,
        event_type: str,
        day: str,
        *,
        status: IngestStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[EventRecord]:
        """Receipts of one (source, event_type, event day) in numeric lag order (``descending`` = largest
        lag first), ties by arrival."""
        ...

    def query_rejections(
        self,
        *,
        entity_id: str | None = None,
        source: str | None = None,
        event_type: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[Rejection]:
        """Quarantined rejections in the order they were received (``start``/``end`` bound the receive
        time), optionally only those whose readable fields match."""
        ...

    def get_rejection(self, rejection_id: str) -> Rejection | None: ...

    def stats(self) -> IndexStats:
        """Totals over the whole index (a scan on AWS: for small stacks, demos and reports)."""
        ...


class IngestLedger(Protocol):
    """What an index knows of where its receipts came from: the lines of one origin already delivered.

    An interrupted bulk ingest (a killed ``pik ingest FILE``) is resumed from it: a line whose bytes are
    already recorded from the same origin and line number was stored by the earlier run and is skipped, so
    the finished workspace equals an uninterrupted run. Receipts and rejections both count. The ledger is
    the index itself (no separate checkpoint that a crash could leave behind the data it describes).
    """

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        """For each line in ``[first_line, last_line]`` recorded from ``origin``, the sha256 (hex) of the
        bytes recorded for it (a receipt's raw bytes, or a rejection's whole request)."""
        ...


class NewReceipt(NamedTuple):
    """A valid request's receipt as ingest prepared it, before any store has seen it: what its
    :class:`EventRecord` holds, with the digests as their 32 bytes, the (source, event_type, day)
    partition as one tuple and both times also as integer milliseconds since the epoch. A named tuple of
    plain values: ingest builds one per request and sends batches of them between processes, where a
    validated model (and hex text) costs several times more to build and to send."""

    event_id: bytes
    partition: tuple[str, str, str]
    entity_id: str
    event_time: str
    event_ms: int
    ingest_time: str
    ingest_ms: int
    ingest_lag_ms: int
    clock_skew: bool
    payload_sha: bytes
    raw_sha: bytes
    raw_size: int
    idempotency_key: str | None
    origin: str
    line: int | None
    delivery: bytes
    key: str  # the identity key its bytes go under (backend.identity.raw_key)

    def record(self, s3_key: str | None = None, payload: str | None = None) -> EventRecord:
        """The index record of this receipt, its bytes at ``s3_key`` (default: the identity key), carrying
        ``payload`` (see :attr:`EventRecord.payload`)."""
        source, event_type, day = self.partition
        return EventRecord(
            event_id=self.event_id.hex(),
            status=IngestStatus.ACCEPTED,
            source=source,
            event_type=event_type,
            entity_id=self.entity_id,
            event_time=self.event_time,
            ingest_time=self.ingest_time,
            ingest_lag_ms=self.ingest_lag_ms,
            clock_skew=self.clock_skew,
            payload_sha=self.payload_sha.hex(),
            day=day,
            hour=self.event_time[11:13],
            s3_key=s3_key or self.key,
            s3_bucket=None,
            raw_sha=self.raw_sha.hex(),
            raw_size=self.raw_size,
            idempotency_key=self.idempotency_key,
            origin=self.origin,
            line=self.line,
            delivery=self.delivery.hex(),
            payload=payload,
        )


class ReceiptColumns(NamedTuple):
    """A batch of :class:`NewReceipt` as columns: one list per field, the same names in the same order.

    What ingest's prepare step sends back from a worker process and what a store writes a batch from: a
    few lists of plain values cost far less to send between processes and to turn into SQL parameters
    than one object per request.

    Ingest prepares a batch without ``delivery`` and ``key`` (both empty: ``PreparedBatch.complete``
    derives them when asked for); :meth:`receipts` needs them."""

    event_id: list[bytes]
    partition: list[tuple[str, str, str]]
    entity_id: list[str]
    event_time: list[str]
    event_ms: list[int]
    ingest_time: list[str]
    ingest_ms: list[int]
    ingest_lag_ms: list[int]
    clock_skew: list[bool]
    payload_sha: list[bytes]
    raw_sha: list[bytes]
    raw_size: list[int]
    idempotency_key: list[str | None]
    origin: list[str]
    line: list[int | None]
    delivery: list[bytes]
    key: list[str]

    @classmethod
    def of(cls, receipts: Iterable[tuple[Any, ...]]) -> ReceiptColumns:
        """The columns of ``receipts`` (each a :class:`NewReceipt`, or a plain tuple in its field order)."""
        columns = [list(column) for column in zip(*receipts, strict=True)]
        return cls(*columns) if columns else cls(*([] for _ in cls._fields))

    def receipts(self) -> list[NewReceipt]:
        """The batch as one :class:`NewReceipt` per request, in order."""
        return [NewReceipt._make(row) for row in zip(*self, strict=True)]

    def select(self, which: Sequence[int]) -> ReceiptColumns:
        """The receipts at positions ``which``, in that order (a column not derived yet stays empty)."""
        columns: list[list[Any]] = [[column[i] for i in which] if column else [] for column in self]
        return ReceiptColumns(*columns)


class RawPacker(Protocol):
    """How a store compresses raw bytes (the local workspace: zstd with a dictionary of its own). A plain,
    picklable value, so that ingest can compress in its prepare worker processes, not in the one writer."""

    def pack_many(self, bodies: Sequence[bytes]) -> tuple[list[int], list[bytes]]:
        """Each body's codec (0: as received) and stored form, for :meth:`ReceiptStore.store_columns`."""
        ...


@runtime_checkable
class ReceiptStore(Protocol):
    """A store that holds both the raw bytes and the event index and can take a batch of new receipts in
    one step (the local workspace: one transaction). Optional: ingest uses it when the raw store and the
    index are the same object and it has this method, and the separate :class:`RawStore` then
    :class:`EventIndex` path otherwise (S3 and DynamoDB)."""

    def raw_packer(self) -> RawPacker | None:
        """How to compress bodies for :meth:`store_columns` now (None: send them as received)."""
        ...

    def store_columns(
        self,
        receipts: ReceiptColumns,
        bodies: Sequence[bytes],
        packed: tuple[Sequence[int], Sequence[bytes]] | None = None,
    ) -> list[int] | None:
        """Store each body under its receipt's key unless the key is taken, and record each receipt, in
        one transaction, as :meth:`EventIndex.record` with STORED or SEEN claims would. Returns the
        positions (in ``receipts``) of the DUPLICATE receipts, in order: every other receipt is ACCEPTED.
        None if some key holds *other* bytes than its receipt's: then no receipt is recorded (bodies may
        be stored), and the caller records the batch through the separate path. ``packed``: the bodies
        as :meth:`raw_packer`'s ``pack_many`` gave them, if the caller compressed them."""
        ...


# -- Investigation queries (bulk reads) ---------------------------------------------------------------------


class Receipt(NamedTuple):
    """A lean view of one receipt for bulk reads (replay plans, recomputes, lag statistics): what those
    need of an :class:`EventRecord`, without building a validated model per row. (A named tuple: a scan
    builds one per row, and it is several times cheaper to build than a frozen dataclass.)"""

    event_id: str
    accepted: bool  # the event id's single ACCEPTED receipt (else a DUPLICATE receipt)
    source: str
    event_type: str
    entity_id: str
    event_time: str
    ingest_time: str
    ingest_lag_ms: int
    clock_skew: bool
    payload_sha: str
    s3_key: str
    s3_bucket: str | None = None
    receipt: str | None = None  # as EventRecord.receipt: orders the receipts of one event
    # The payload as canonical JSON when the index carries it (EventRecord.payload), else None: a reader
    # that needs it then reads the raw bytes. Trust it only if its sha256 is payload_sha.
    payload: str | None = None

    @property
    def day(self) -> str:
        return self.event_time[:10]


@dataclass(frozen=True, slots=True)
class DayCount:
    """Receipts of one event day, split by when they arrived."""

    day: str
    accepted: int  # distinct events of the day (their accepted receipt)
    late: int  # of those, ingested at or after the end of the day plus the grace period
    duplicate: int  # duplicate receipts of the day's events
    first_late_ingest: str | None = None  # when the first and the last late event arrived
    last_late_ingest: str | None = None


@dataclass(frozen=True, slots=True)
class HourLagRollup:
    """Accepted events of one event hour from a rollup: exact counts, lags in log-scale buckets
    (:mod:`backend.lag_buckets`: lower bound -> count)."""

    hour: str
    count: int
    late: int  # lag >= the late threshold asked for: exact
    buckets: dict[int, int]


@dataclass(frozen=True, slots=True)
class LagRollup:
    """A partition-day's lag from rollups: the counts of :class:`backend.services.lag.LagReport`, exact,
    and per-hour lag buckets from which percentiles are read within :data:`backend.lag_buckets.LAG_ERROR`."""

    count: int
    duplicates: int
    clock_skew: int
    late: int
    max_ms: int | None  # exact (the lag index's largest accepted lag)
    hours: list[HourLagRollup]


@dataclass(frozen=True, slots=True)
class ReplaySelection:
    """What a replay of one scope would send, without the receipts themselves (a dry run's figures).

    ``planned`` receipts are the eligible ones (past the filters, duplicates only when included) whose raw
    bytes exist, in scan order, up to the limit: raw bytes are checked in order until the limit is filled,
    so ``over_limit`` eligible receipts beyond that point are left unchecked. ``windows`` are the sorted
    (entity, event day) pairs of the planned receipts; ``sample`` their first few; ``fingerprint`` is
    :func:`backend.services.replay_messages.fingerprint` of the whole planned list."""

    scanned: int
    filtered: int
    duplicate: int
    missing_raw: int
    over_limit: int
    planned: int
    by_day: dict[str, int]
    windows: list[tuple[str, str]]
    entities: int
    first_event_time: str | None
    last_event_time: str | None
    sample: list[Receipt]
    fingerprint: str
    # The fingerprint so far after every CHECKPOINT_EVERY planned receipts (backend.replay_fingerprint): an
    # execution checks each stretch it reads again against these before sending it.
    checkpoints: tuple[str, ...] = ()
    # The raw keys found missing, when the store kept them (None: not kept): an execution hands them back
    # to replay_receipts, which then checks no raw key again (raw bytes are never deleted).
    missing_keys: frozenset[str] | None = None
    # The planned receipts themselves, when asked to keep them (``keep``) and there are at most that many.
    receipts: list[Receipt] | None = None


class InvestigationIndex(Protocol):
    """Bulk reads over the event index for investigations. Scans are keyset-paged like the queries of
    :class:`EventIndex` (same order, same cursor rules); counts are per event day over a half-open range
    of days ``[first_day, end_day)`` (``YYYY-MM-DD``; anything else raises InvalidRequest), and days
    without any receipt are left out."""

    def scan_entity(
        self,
        entity_id: str,
        start: str,
        end: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        """Receipts of one entity with ``start <= event_time < end`` in event-time order (ties by event id,
        then receipt): :meth:`EventIndex.query_entity` in lean form."""
        ...

    def scan_partition(
        self,
        source: str,
        event_type: str,
        day: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        """Receipts of one (source, event_type, event day) in ascending numeric lag order, ties by arrival:
        :meth:`EventIndex.query_partition` in lean form."""
        ...

    def day_counts_entity(
        self, entity_id: str, first_day: str, end_day: str, *, grace_ms: int = 0, late: bool = True
    ) -> list[DayCount]:
        """Per event day of one entity: accepted events, how many of them arrived late, duplicates. With
        ``late=False`` the caller needs no late figures: a store may then leave them 0 and None when that
        is cheaper (locally the counts then come from the entity index alone)."""
        ...

    def day_counts_partition(
        self, source: str, event_type: str, first_day: str, end_day: str, *, grace_ms: int = 0
    ) -> list[DayCount]:
        """As :meth:`day_counts_entity`, for the (source, event_type) partitions of each day."""
        ...

    def lag_rollup(self, source: str, event_type: str, day: str, *, late_ms: int) -> LagRollup | None:
        """The lag of one partition-day from rollups, counting lags ``>= late_ms`` as late; None when the
        store keeps none (the caller then computes it from :meth:`scan_partition`)."""
        ...

    def select_replay(
        self,
        request: ReplayRequest,
        *,
        sample: int,
        progress: Callable[[int, int | None], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        keep: int = 0,
    ) -> ReplaySelection:
        """The selection of a replay of ``request`` (a normalized request; its raw keys checked in this
        backend's raw store), with the first ``sample`` planned receipts: exactly what
        :func:`backend.replay_selection.select_by_scans` answers over :meth:`scan_entity` /
        :meth:`scan_partition` and :meth:`RawCatalog.missing`, at whatever cost the store allows.
        ``progress(receipts read, receipts to read when known)`` hears of each page or chunk read;
        ``should_stop()`` is asked between them, and True raises :class:`backend.errors.Cancelled`.
        With ``keep``, a store that reads the receipts anyway may return them (``receipts``) when the plan
        has at most ``keep``: an execution then sends them without reading the scope again."""
        ...

    def replay_receipts(
        self, request: ReplayRequest, *, missing: frozenset[str] | None = None
    ) -> Iterator[Receipt]:
        """The planned receipts of :meth:`select_replay`, in its order, read a page at a time (never the
        whole scope at once): what an execution sends. Exactly what
        :func:`backend.replay_selection.planned_receipts` yields. With ``missing`` (a selection's
        ``missing_keys``) a store may take exactly those raw keys as missing instead of checking again."""
        ...


@dataclass(frozen=True, slots=True)
class RollupBatch:
    """What one batch of change records did to the rollups: receipts counted, records already counted
    before (a replayed batch), records that count nothing (other items, MODIFY, REMOVE), transactions."""

    counted: int
    replayed: int
    ignored: int
    transactions: int


class RollupMaintainer(Protocol):
    """Keeps a store's rollups (AWS: from the events table's stream). Only stores with rollups have one."""

    def apply_stream(self, records: Sequence[Mapping[str, Any]]) -> RollupBatch:
        """Count the inserted receipts and rejections of ``records`` (one stream shard's batch, in its
        order) exactly once, however often the same records are applied. Raises ValueError for a record
        that is not a stream record, StoreError when the store fails (nothing of the failed part counted)."""
        ...

    def backfill(self, *, settle_s: float = 60.0) -> int:
        """Count what the store holds from before the stream was counted, then mark the rollups ready
        (resumable; a no-op once ready). Returns the items counted."""
        ...


@dataclass(frozen=True, slots=True)
class HeadsBackfill:
    """What a backfill of the aggregates table's window heads found and did."""

    windows: int
    """(entity, day) windows that have at least one aggregate version."""
    lacking: int
    """Of those, the windows that had no head item when the table was scanned."""
    written: int
    """Heads this run wrote (0 on a dry run; ``lacking`` otherwise)."""
    marked: bool
    """Whether the table now records that every window has its head (the blast radius reads heads)."""
    was_marked: bool
    """Whether it recorded so before this run."""


class WindowHeadsMaintainer(Protocol):
    """Keeps the window heads of an aggregates table (AWS: ``backend.adapters.aws.window_heads``)."""

    def backfill(
        self, *, dry_run: bool = False, on_progress: Callable[[str, int], None] | None = None
    ) -> HeadsBackfill:
        """Scan the table once; write the head of each window with versions that lacks one, then record that
        every window has its head. Idempotent and resumable: an interrupted run leaves the heads it wrote and
        no record, and the next run writes only the rest. ``dry_run`` writes nothing. ``on_progress`` hears
        ``("scanned", items so far)`` after each page and ``("written", heads so far)`` after each batch.
        Raises StoreError when the store fails."""
        ...


# -- Raw bytes in bulk ------------------------------------------------------------------------------------


class RawCatalog(Protocol):
    """Batch reads of the raw store: which keys hold bytes, and the bytes of many keys (a replay plan
    checks thousands of keys; a recompute reads the payloads of a whole day). On S3 the natural form is a
    listing of the event-day prefixes and parallel GETs."""

    def missing(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` under which nothing is stored."""
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The bytes of each of ``keys`` that exists (absent keys are left out)."""
        ...


# -- The replay queue (DESIGN invariants 4 and 6) ---------------------------------------------------------

# SendMessageBatch takes at most this many entries.
QUEUE_BATCH = 10


@dataclass(frozen=True, slots=True)
class SendFailure:
    """An entry of a batch that the queue did not take."""

    index: int  # position of the entry in the batch
    code: str
    message: str
    sender_fault: bool = False  # True: sending the same entry again fails again


class QueueMessage(NamedTuple):
    """A received message. ``receipt_handle`` belongs to this receive: delete or release with it. (A named
    tuple: a drain of a 300k-message replay builds one per message.)"""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int  # this receive included
    sent_at: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message moved to the dead-letter queue after ``receive_count`` receives without a delete."""

    message_id: str
    body: str
    receive_count: int
    sent_at: str
    dead_at: str | None = None  # when it was moved, where the queue knows it


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int  # waiting to be received
    in_flight: int  # received, neither deleted nor visible again yet
    dead: int  # in the dead-letter queue


class ReplayQueue(Protocol):
    """A queue with SQS semantics: at-least-once delivery, a visibility timeout per receive, a receive
    count per message, and a dead-letter queue that takes a message instead of delivering it once it has
    been received ``max_receives`` times without being deleted."""

    max_receives: int

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        """Send up to :data:`QUEUE_BATCH` messages in one call; the entries not taken, with why (empty when
        all were sent). More than QUEUE_BATCH raises InvalidRequest. A StoreError means the call as a
        whole failed: some entries may have been sent (delivery is at least once)."""
        ...

    def receive(self, max_messages: int = QUEUE_BATCH, visibility_timeout_s: int = 30) -> list[QueueMessage]:
        """Up to ``max_messages`` visible messages, each then hidden for the visibility timeout."""
        ...

    def delete(self, receipt_handles: Sequence[str]) -> None:
        """Delete received messages (done with). A handle of an earlier receive may be ignored."""
        ...

    def release(self, receipt_handles: Sequence[str]) -> None:
        """Make received messages visible again now (a failed attempt: retry without waiting)."""
        ...

    def depth(self) -> QueueDepth: ...

    def dead_letters(self, *, limit: int = 100, after: str | None = None) -> Page[DeadLetter]:
        """The dead-letter queue, oldest first, keyset-paged; reading does not consume it."""
        ...


@runtime_checkable
class BulkReceiveQueue(Protocol):
    """A replay queue that can also hand out many messages in one call (the local queue: one write
    transaction instead of one per 10 messages). SQS has no such call; a drain uses it when it is there."""

    def receive_many(self, max_messages: int, visibility_timeout_s: int = 30) -> list[QueueMessage]:
        """Up to ``max_messages`` visible messages (at most :data:`BULK_RECEIVE`), each then hidden for
        the visibility timeout, with the semantics of :meth:`ReplayQueue.receive` (receive counts,
        dead-lettering past the maximum) except the order: not necessarily oldest first."""
        ...


BULK_RECEIVE = 1000


# -- The replay audit trail ---------------------------------------------------------------------------------


class AuditLog(Protocol):
    """Every replay, dry or real. A record is written once, and a RUNNING one finished once (a conditional
    update): nothing else is ever changed or deleted."""

    def begin(self, record: ReplayAudit) -> None:
        """Store a new record. InvalidRequest if its replay_id is taken."""
        ...

    def finish(self, record: ReplayAudit) -> None:
        """Replace the RUNNING record of ``record.replay_id`` by its final state. InvalidRequest if there is
        none, or it is not RUNNING any more."""
        ...

    def get(self, replay_id: str) -> ReplayAudit | None: ...

    def query(self, *, limit: int = 50, after: str | None = None) -> Page[ReplayAudit]:
        """Records, newest first (by start time, then id), keyset-paged."""
        ...


# -- Versioned aggregates (DESIGN invariant 5) -------------------------------------------------------------


class ManifestEntry(NamedTuple):
    """One input of an aggregate version: an accepted event as it was when the version was computed. (A
    named tuple: a recompute builds one per input, 300k for a busy entity-day.)"""

    event_id: str
    payload_sha: str
    ingest_time: str
    ingest_lag_ms: int


@dataclass(frozen=True, slots=True)
class WindowInputs:
    """The accepted events of one (entity, time window) as a recompute of count metrics needs them: their
    manifest entries sorted by event id, and the (source, event_type) of each, in the same order."""

    entries: list[ManifestEntry]
    streams: list[tuple[str, str]]


@runtime_checkable
class WindowInputsIndex(Protocol):
    """Optional on an :class:`InvestigationIndex`: a window's inputs in one read, without a receipt per
    event. The processor uses it when no metric it recomputes needs a payload field; a 300k-event window
    is then read in a fraction of what paging :meth:`InvestigationIndex.scan_entity` costs."""

    def window_inputs(self, entity_id: str, start: str, end: str) -> WindowInputs:
        """The ACCEPTED receipts of ``entity_id`` with ``start <= event_time < end``, as
        :meth:`InvestigationIndex.scan_entity` with ``accepted_only`` reads them, sorted by event id."""
        ...


@runtime_checkable
class LatestVersions(Protocol):
    """Optional on an :class:`AggregateStore`: the latest versions of many windows at once, in a number of
    calls that grows with the pages read, not with the windows (on DynamoDB: the window heads, 100 windows
    a call, then one Query per entity over the span of its days). The processor and a dry run's projection
    use it when the store has it, and :meth:`AggregateStore.latest` per window and metric otherwise."""

    def latest_many(
        self, windows: Sequence[tuple[str, str]], metrics: Sequence[str]
    ) -> dict[tuple[str, str, str], AggregateVersion | None]:
        """For each (entity, day) of ``windows`` and each of ``metrics``: what :meth:`AggregateStore.latest`
        answers for it, keyed ``(entity, day, metric)``."""
        ...


class AggregateStore(Protocol):
    """Versions 1, 2, 3... of each (entity, day, metric), append-only, with their input manifests.

    :meth:`append` is a conditional write: version n is written only if it does not exist yet and n - 1
    does, so concurrent processors never overwrite a version or leave a gap. On DynamoDB that is one
    TransactWriteItems (a ConditionCheck on n - 1 and a Put of n with ``attribute_not_exists``); a manifest,
    which can outgrow an item, is stored first under its inputs hash (content-addressed, so storing it
    twice is harmless), e.g. as an S3 object.
    """

    def latest(self, entity_id: str, day: str, metric: str) -> AggregateVersion | None: ...

    def get(self, entity_id: str, day: str, metric: str, version: int) -> AggregateVersion | None: ...

    def versions(
        self,
        entity_id: str,
        day: str,
        *,
        metric: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[AggregateVersion]:
        """The versions of one (entity, day), of one metric or all, by metric then version, keyset-paged."""
        ...

    def append(self, version: AggregateVersion, manifest: Sequence[ManifestEntry]) -> bool:
        """Store ``version`` with its manifest if its number is the next one. False (nothing written but
        perhaps the manifest) when that number is taken: another processor got there first, so re-read
        and decide again. InvalidRequest when the previous number does not exist (it would leave a gap)."""
        ...

    def manifest(self, inputs_hash: str) -> list[ManifestEntry] | None:
        """The manifest stored under ``inputs_hash``, sorted by event id; None if there is none."""
        ...

    def windows_with_versions(self, windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (entity_id, day) windows among ``windows`` that have at least one version."""
        ...


# -- The overview's rollups (``pik overview``) ------------------------------------------------------------

# Upper bounds (exclusive, milliseconds) of the lag histogram buckets of an :class:`HourRollup`; a last
# bucket holds everything at or above the final bound. Percentiles read from it are bucket bounds.
LAG_BUCKETS_MS: tuple[int, ...] = (
    1_000,
    10_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
    14_400_000,
    43_200_000,
    86_400_000,
    259_200_000,
)


@dataclass(frozen=True, slots=True)
class HourRollup:
    """The receipts of one (source, event_type, event day, event hour): counts and a lag histogram."""

    source: str
    event_type: str
    day: str
    hour: int  # 0-23, of the event time
    accepted: int  # distinct events (their accepted receipt)
    late: int  # of those, ingested at or after the end of the event day plus the grace period
    duplicate: int  # duplicate receipts
    skewed: int  # accepted events whose producer clock ran ahead (event time after ingest time)
    lag_buckets: tuple[int, ...]  # accepted events per bucket of LAG_BUCKETS_MS (len(LAG_BUCKETS_MS) + 1)
    max_lag_ms: int


@dataclass(frozen=True, slots=True)
class EntityDayCount:
    """The accepted events of one (entity, event day)."""

    entity_id: str
    day: str
    accepted: int
    late: int
    skewed: int


@dataclass(frozen=True, slots=True)
class RejectionCount:
    """Quarantined requests received on one day with one reason and the same readable source/type."""

    day: str  # the receive day
    source: str | None
    event_type: str | None
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class WindowChurn:
    """An (entity, day, metric) window with more than one aggregate version."""

    entity_id: str
    day: str
    metric: str
    versions: int
    first_value: int | float | None
    last_value: int | float | None
    last_computed_at: str


class OverviewIndex(Protocol):
    """Aggregates for ``pik overview``: counts per hour, per entity-day, per rejection reason and per
    versioned window, over a half-open range of days ``[first_day, end_day)`` (``YYYY-MM-DD``; anything
    else raises InvalidRequest). Locally each is one SQL aggregate over an index; on AWS they are read
    from the per-day queries (and the rollups, where the stack has them), never returned event by event.
    Rows with nothing to count are left out; every list is sorted by its key fields."""

    def event_day_span(self) -> tuple[str, str] | None:
        """The first and the last event day that hold an accepted event, or None when there is none."""
        ...

    def hour_rollups(self, first_day: str, end_day: str, *, grace_ms: int = 0) -> list[HourRollup]:
        """One row per (source, event_type, day, hour) with a receipt.

        Read from the AWS rollups (``docs/aws.md``, "Rollups"), every count is the same as from the events,
        but the lag histogram and the largest lag are coarser, as the rollups keep each lag in a log-scale
        bucket of width ``w`` (``backend.lag_buckets``; exact below 32 ms, else ``w`` at most 1/16 of its
        lower bound): an event is counted in the ``LAG_BUCKETS_MS`` bucket of its rollup bucket's lower
        bound, so a lag less than ``w`` above a bound (within 1/16 of it: 1,000-1,023 ms, 10,000-10,239 ms,
        ...) is counted in the bucket below that bound; ``max_lag_ms`` is the last millisecond of the hour's
        highest rollup bucket, at or above the true largest lag and within 1/16 of it."""
        ...

    def entity_day_counts(
        self, first_day: str, end_day: str, *, grace_ms: int = 0, min_accepted: int = 0, min_skewed: int = 0
    ) -> list[EntityDayCount]:
        """One row per (entity, day) with an accepted event, of the entities with a day of at least
        ``min_accepted`` accepted events or ``min_skewed`` skewed ones (the others cannot be judged)."""
        ...

    def rejection_counts(self, first_day: str, end_day: str) -> list[RejectionCount]:
        """Rejections by receive day, source, event type and reason."""
        ...

    def churned_windows(self, first_day: str, end_day: str) -> list[WindowChurn]:
        """The (entity, day, metric) windows of these days with two versions or more."""
        ...

    def partition_totals(self) -> list[PartitionCount] | None:
        """Accepted events and duplicate receipts per (source, event_type) over every day, sorted by source
        and type, read from the rollups (O(partitions x days)); None when the store keeps none to read them
        from (an AWS stack without the rollups' directory of the days): IndexStats counts them by a scan."""
        ...

    def day_entities(self, day: str) -> list[EntityDayCount] | None:
        """The entities with an accepted event on event day ``day`` (every source/type), sorted by entity;
        ``late`` counts the events ingested after the day ended. Read from the rollups; None as for
        :meth:`partition_totals`."""
        ...
