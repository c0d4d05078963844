"""Ingest: validate, identify, store raw bytes, then index (DESIGN invariants 1, 2, 3, 7, 8, 9).

The order of writes is the safety argument. Rejections are quarantined first; raw bytes are stored
before the index hears of the event, and the index decides ACCEPTED or DUPLICATE atomically. A failure
anywhere raises :class:`StoreError` for the whole batch and acknowledges nothing; a retry of the same
input then ends with exactly one ACCEPTED per event id (raw bytes already stored are found, not rewritten).

Holds :class:`IngestService` and what it reads and answers (:class:`Received`, :class:`PreparedBatch`,
:class:`Resumed`). Parsing and validating one request is :mod:`backend.services.ingest_validation`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count, repeat
from typing import TYPE_CHECKING, Any, cast, overload

from backend.errors import ReadOnlyError
from backend.identity import inline_payload, receipt_key, sha256_hex
from backend.model import (
    MAX_BODY_BYTES,
    EventRecord,
    IngestResult,
    IngestStatus,
    Rejection,
)
from backend.ports import (
    Claim,
    EventIndex,
    IngestLedger,
    RawObject,
    RawPacker,
    RawPutStatus,
    RawStore,
    ReceiptColumns,
    ReceiptStore,
    Recorded,
)
from backend.services.ingest_batch import Committed as Committed
from backend.services.ingest_batch import PreparedBatch as PreparedBatch

# Parsing and validation live in ingest_validation; these names stay importable from here.
from backend.services.ingest_validation import MAX_REASON_CHARS as MAX_REASON_CHARS
from backend.services.ingest_validation import Invalid as Invalid
from backend.services.ingest_validation import Prepared as Prepared
from backend.services.ingest_validation import prepare as prepare
from backend.services.ingest_validation import prepare_fast
from backend.times import Clock, fmt, lag_ms

_STATUS = {Recorded.ACCEPTED: IngestStatus.ACCEPTED, Recorded.DUPLICATE: IngestStatus.DUPLICATE}

if TYPE_CHECKING:
    from backend.services.ingest_workers import PrepareWorkers

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PREPARED_FIELDS = len(ReceiptColumns._fields) - 2  # all but delivery and key, derived on demand
_MS = timedelta(milliseconds=1)

# How much of a rejected request is kept in quarantine (the full size and sha256 are always recorded).
QUARANTINE_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived: its exact bytes and where it came from (for the quarantine).

    A reader that met a request too large to hold passes only a prefix as ``body`` and the whole request's
    ``size`` and ``sha256``; such a request is rejected for its size and the prefix quarantined.
    """

    body: bytes
    origin: str = "api"
    line: int | None = None
    size: int | None = None
    sha256: str | None = None


class NumberedLines(Sequence[Received]):
    """Consecutive lines of one input as a reader splits them: line ``first`` onwards, each line's request
    bytes in ``bodies``. It is a sequence of :class:`Received`, made only when one is asked for, and it
    travels to a prepare worker as one list of bytes: the one process that stores does next to nothing per
    line to read them or to send them.

    ``oversize``: for a line too long to hold (by its index in the batch), the whole line's size and
    sha256; its body is then only the prefix kept in quarantine. ``end``: how many bytes of the input
    are read through the last line, framing included (for progress)."""

    __slots__ = ("bodies", "end", "first", "origin", "oversize")

    def __init__(
        self,
        origin: str,
        first: int,
        bodies: list[bytes],
        oversize: dict[int, tuple[int, str]] | None = None,
        end: int = 0,
    ) -> None:
        self.origin = origin
        self.first = first
        self.bodies = bodies
        self.oversize = oversize or {}
        self.end = end

    @property
    def last(self) -> int:
        """The number of the last line (``first - 1`` when empty)."""
        return self.first + len(self.bodies) - 1

    def __len__(self) -> int:
        return len(self.bodies)

    @overload
    def __getitem__(self, index: int) -> Received: ...
    @overload
    def __getitem__(self, index: slice) -> list[Received]: ...
    def __getitem__(self, index: int | slice) -> Received | list[Received]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.bodies)))]
        if index < 0:
            index += len(self.bodies)
        body = self.bodies[index]  # IndexError when out of range
        long = self.oversize.get(index)
        if long is None:
            return Received(body, self.origin, self.first + index)
        return Received(body, self.origin, self.first + index, size=long[0], sha256=long[1])

    def __iter__(self) -> Iterator[Received]:
        if self.oversize:
            return (self[i] for i in range(len(self.bodies)))
        return map(Received, self.bodies, repeat(self.origin), count(self.first))

    def split(self, at: int) -> tuple[NumberedLines, NumberedLines]:
        """The lines before index ``at`` and the lines from it (the first part's ``end`` is unknown: 0)."""
        head = {i: v for i, v in self.oversize.items() if i < at}
        tail = {i - at: v for i, v in self.oversize.items() if i >= at}
        return (
            NumberedLines(self.origin, self.first, self.bodies[:at], head),
            NumberedLines(self.origin, self.first + at, self.bodies[at:], tail, self.end),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (NumberedLines, (self.origin, self.first, self.bodies, self.oversize, self.end))


def bodies_of(batch: Sequence[Received]) -> Sequence[bytes]:
    """Each request's bytes, in order."""
    if isinstance(batch, NumberedLines):
        return batch.bodies
    return [item.body for item in batch]


def _batched(items: Iterable[Received], size: int) -> Iterator[list[Received]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    chunk: list[Received] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class Resumed:
    """One committed batch of :meth:`IngestService.resume_stream`: the requests it stored, told by counts
    and exceptions (:class:`Committed`), and how many of the batch an earlier run had already stored
    (skipped, no result)."""

    committed: Committed
    skipped: int

    @property
    def results(self) -> list[IngestResult]:
        """The result of each request stored (not of those skipped), in order; built on each call."""
        return self.committed.results()


# -- the service ----------------------------------------------------------------------------------------


class IngestService:
    """Ingest requests into a raw store and an event index.

    ``clock`` sets the ingest time (inject one for demos and backfills). With ``read_only`` every call is
    refused with :class:`ReadOnlyError` before anything is read or written.

    Each request read is one *delivery*, with an identity (``EventRecord.delivery``): for a numbered line,
    sha256 of this service's ``run_id``, the origin, the line and the bytes' sha256; for a request without a
    line, a random one. A store that retries a write after an ambiguous failure (the write may or may not
    have happened) recognises its own earlier receipt by it, so a retry never adds a receipt.
    """

    def __init__(
        self,
        raw: RawStore,
        index: EventIndex,
        clock: Clock | None = None,
        *,
        read_only: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.raw = raw
        self.index = index
        self.clock = clock or Clock()
        self.read_only = read_only
        self.run_id = run_id or uuid.uuid4().hex
        # One store holding both the bytes and the index takes a batch in one step (the local workspace).
        self._receipts = raw if isinstance(raw, ReceiptStore) and raw is cast(object, index) else None

    def ingest(self, body: bytes, origin: str = "api") -> IngestResult:
        """Ingest one request body."""
        return self.ingest_batch([Received(body, origin)])[0]

    def ingest_batch(self, batch: Sequence[Received]) -> list[IngestResult]:
        """Ingest a batch; one result per request, in order. Raises StoreError (nothing acknowledged)."""
        return self.commit(self.prepare_batch(batch))

    def ingest_stream(
        self, items: Iterable[Received], batch_size: int = 10_000, workers: PrepareWorkers | None = None
    ) -> Iterator[list[IngestResult]]:
        """Ingest a stream in batches, yielding each batch's results once it is committed, in order.

        Memory is bounded by a few batches whatever the length of the stream. If a commit fails, its
        StoreError is raised here; every batch yielded before it is durable. With ``workers``, batches are
        prepared in those processes while earlier ones are committed here.
        """
        for _, prepared in self._prepared(_batched(items, batch_size), workers):
            yield self.commit(prepared)

    def resume_stream(
        self,
        items: Iterable[Received],
        ledger: IngestLedger | None,
        batch_size: int = 10_000,
        workers: PrepareWorkers | None = None,
    ) -> Iterator[Resumed]:
        """Ingest a numbered stream (the lines of one input), skipping what an earlier run of it stored.

        A request is skipped when ``ledger`` already holds a receipt or rejection from the same origin and
        line with the same bytes: the earlier run stored it, and storing it again would add a DUPLICATE
        receipt that no producer sent. So a run killed at any point and started again on the same input
        ends with the workspace an uninterrupted run would have left. Requests without a line number, and
        lines whose bytes changed since, are ingested as usual; with no ``ledger``, every request is.
        Commits, failures and ``workers`` are as in :meth:`ingest_stream`; each batch is told by its counts
        and exceptions (:class:`Committed`), its per-request results built only if asked for.
        """
        return self.resume_batches(_batched(items, batch_size), ledger, workers)

    def resume_batches(
        self,
        batches: Iterable[Sequence[Received]],
        ledger: IngestLedger | None,
        workers: PrepareWorkers | None = None,
    ) -> Iterator[Resumed]:
        """:meth:`resume_stream` over requests already in batches (a reader's :class:`NumberedLines`, say):
        each batch is committed as it comes, whatever its size."""
        for chunk, prepared in self._prepared(batches, workers):
            skip = _already_delivered(chunk, prepared, ledger) if ledger is not None else set()
            if skip:
                prepared = _without(prepared, skip)
            yield Resumed(self.store(prepared), len(skip))

    def _prepared(
        self, chunks: Iterable[Sequence[Received]], workers: PrepareWorkers | None
    ) -> Iterator[tuple[Sequence[Received], PreparedBatch]]:
        if self.read_only:
            raise ReadOnlyError("ingest refused: the kit is in read-only mode")
        if workers is not None:
            yield from workers.prepare(chunks, self.clock, self.run_id, self._raw_packer, self.prepare_batch)
            return
        for chunk in chunks:
            yield chunk, self.prepare_batch(chunk)

    def prepare_batch(self, batch: Sequence[Received]) -> PreparedBatch:
        """Validate and identify a batch (CPU only: nothing is read or written). The clock is read once
        per request, in order."""
        if self.read_only:
            raise ReadOnlyError("ingest refused: the kit is in read-only mode")
        return prepare_requests(batch, self.clock, self.run_id, self._raw_packer())

    def _raw_packer(self) -> RawPacker | None:
        """How the store wants raw bytes compressed now (:class:`RawPacker`), if it takes them packed."""
        return self._receipts.raw_packer() if self._receipts is not None else None

    def commit(self, prepared: PreparedBatch) -> list[IngestResult]:
        """Store a prepared batch: quarantine, then raw bytes, then the index; one result per request, in
        order. Raises StoreError."""
        return self.store(prepared).results()

    def store(self, prepared: PreparedBatch) -> Committed:
        """:meth:`commit`, answered by counts and exceptions (:class:`Committed`), for a caller that needs
        no object per request. Raises StoreError."""
        if self.read_only:
            raise ReadOnlyError("ingest refused: the kit is in read-only mode")
        ids = self.index.quarantine([r for _, r in prepared.rejected]) if prepared.rejected else []
        keys: list[str] | None = None
        duplicates: list[int] = []
        if prepared.positions:
            keys, duplicates = self._store(prepared)
        return Committed(prepared, duplicates, ids, keys)

    def _store(self, prepared: PreparedBatch) -> tuple[list[str] | None, list[int]]:
        """Store each valid body and index its receipt; returns where each body is (None: each at its
        receipt's key) and the indexes of the DUPLICATE receipts. A store of both takes the batch in one
        step (:class:`ReceiptStore`), unless some key holds other bytes: then, as for separate stores,
        :meth:`_store_records`."""
        bodies = prepared.bodies
        if self._receipts is not None:
            duplicates = self._receipts.store_columns(prepared.receipts, bodies, prepared.packed)
            if duplicates is not None:
                return None, duplicates
        records, statuses = self._store_records(
            [
                (b, r.record(payload=inline_payload(b, r.payload_sha.hex())))
                for b, r in zip(bodies, prepared.complete().receipts(), strict=True)
            ]
        )
        return [r.s3_key for r in records], [
            j for j, status in enumerate(statuses) if status is IngestStatus.DUPLICATE
        ]

    def _store_records(
        self, items: Sequence[tuple[bytes, EventRecord]]
    ) -> tuple[list[EventRecord], list[IngestStatus]]:
        """Store each body, then index its receipt; returns the records (each naming where its bytes are)
        and their statuses.

        A body goes under its identity key. If that key already holds *other* bytes (same event id, another
        request: an idempotency-key retry with a new payload, changed extra fields), the body is kept under
        a content-addressed receipt key instead: nothing received is dropped or overwrites another receipt.
        When the raw store cannot say what a taken key holds (S3), the index decides, from the accepted
        receipt, whether the bytes there are ours (see :class:`Claim`), which spares a call per duplicate.
        """
        bodies = [body for body, _ in items]
        records = [rec for _, rec in items]
        puts = self.raw.put_new([RawObject(rec.s3_key, body, _sha(rec)) for body, rec in items])
        claims: list[Claim] = []
        divergent: list[int] = []
        for i, put in enumerate(puts):
            if put.status is RawPutStatus.CREATED:
                claims.append(Claim.STORED)
            elif put.stored_sha256 is None:
                claims.append(Claim.UNVERIFIED)
            else:
                claims.append(Claim.SEEN)
                if put.stored_sha256 != records[i].raw_sha:
                    divergent.append(i)
        self._rekey(divergent, bodies, records)
        outcomes = self.index.record(records, claims)
        # Only UNVERIFIED receipts come back undecided; settle them and record them again.
        misplaced = [i for i, o in enumerate(outcomes) if o is Recorded.MISPLACED]
        unseen = [i for i, o in enumerate(outcomes) if o is Recorded.UNSEEN]
        if misplaced or unseen:
            # UNSEEN: the key is taken and the index cannot say by whose bytes (an earlier attempt stored
            # them and failed before the index, say). Read their sha256.
            moved = misplaced + [
                i for i in unseen if self.raw.sha256(records[i].s3_key) != records[i].raw_sha
            ]
            self._rekey(moved, bodies, records)
            again = sorted(misplaced + unseen)
            second = self.index.record(
                [records[i] for i in again], [Claim.SEEN if i in misplaced else Claim.STORED for i in again]
            )
            for i, outcome in zip(again, second, strict=True):
                outcomes[i] = outcome
        statuses = [IngestStatus(o.value) for o in outcomes]
        return records, statuses

    def _rekey(self, which: Sequence[int], bodies: list[bytes], records: list[EventRecord]) -> None:
        """Store the bodies at ``which`` under their content-addressed receipt keys (in place)."""
        if not which:
            return
        alt = []
        for i in which:
            r = records[i]
            sha = _sha(r)
            alt.append(RawObject(receipt_key(r.source, r.event_type, r.day, r.event_id, sha), bodies[i], sha))
        for i, put in zip(which, self.raw.put_new(alt), strict=True):
            records[i] = records[i].model_copy(update={"s3_key": put.key})


def _sha(record: EventRecord) -> str:
    if record.raw_sha is None:  # only rows the original kit wrote lack it, and ingest never reads those
        raise ValueError(f"record of event {record.event_id} has no raw_sha")
    return record.raw_sha


def prepare_requests(
    batch: Sequence[Received], clock: Clock, run_id: str | None = None, packer: RawPacker | None = None
) -> PreparedBatch:
    """Validate a batch and build its receipts; ``clock`` is read once per request, in order.
    ``run_id`` names the run for the deliveries' identities (a random one if None); with ``packer``, the
    valid bodies are also compressed as the store keeps them (``PreparedBatch.packed``)."""
    run = run_id or uuid.uuid4().hex
    prepared = PreparedBatch(lines=[item.line for item in batch], run_id=run)
    # Names repeat across a batch: one object each, so a batch sent between processes carries each once.
    names: dict[Any, Any] = {}
    stamp = _Stamp()
    rows: list[tuple[Any, ...]] = []  # the receipts, as plain tuples in NewReceipt's field order
    positions, bodies, origins = prepared.positions, prepared.bodies, prepared.origins
    for i, item in enumerate(batch):
        now = clock.now()
        if item.line is not None:
            first, last = origins.get(item.origin, (item.line, item.line))
            origins[item.origin] = (min(first, item.line), max(last, item.line))
        try:
            if item.size is not None and item.size > len(item.body):
                raise Invalid(
                    f"request is {item.size:,} bytes; the limit is {MAX_BODY_BYTES:,} bytes (1 MiB)"
                )
            p = prepare_fast(item.body) or prepare(item.body)
        except Invalid as bad:
            prepared.rejected.append((i, _rejection(item, bad, now)))
            prepared.summaries[i] = bad.summary
            continue
        lag = lag_ms(now, p.event_dt)
        partition = (p.source, p.event_type, p.day)
        rows.append((
            bytes.fromhex(p.event_id), names.setdefault(partition, partition),
            names.setdefault(p.entity_id, p.entity_id), p.event_time, (p.event_dt - _EPOCH) // _MS,
            *stamp(now), max(lag, 0), lag < 0, bytes.fromhex(p.payload_sha), bytes.fromhex(p.raw_sha),
            len(p.body), p.idempotency_key, item.origin, item.line,
        ))  # fmt: skip
        positions.append(i)
        bodies.append(item.body)
    # Deliveries and keys are derived when asked for (PreparedBatch.complete): the local store needs
    # neither, and they would be most of what a worker sends back.
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in range(_PREPARED_FIELDS)]
    prepared.receipts = ReceiptColumns._make([*columns, [], []])  # delivery and key: not yet
    if packer is not None and bodies:
        prepared.packed = packer.pack_many(bodies)
    return prepared


class _Stamp:
    """An ingest time as stored (``fmt``) and in milliseconds, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def __call__(self, now: datetime) -> tuple[str, int]:
        ms = ((now if now.tzinfo else now.replace(tzinfo=UTC)) - _EPOCH) // _MS
        if ms != self._ms:
            self._ms, self._text = ms, fmt(now)
        return self._text, ms


def _rejection(item: Received, bad: Invalid, now: datetime) -> Rejection:
    return Rejection(
        received_at=fmt(now),
        reason=bad.reason,
        origin=item.origin,
        line=item.line,
        size=item.size if item.size is not None else len(item.body),
        sha256=item.sha256 or sha256_hex(item.body),
        data=item.body[:QUARANTINE_MAX_BYTES],
        truncated=(item.size or len(item.body)) > QUARANTINE_MAX_BYTES,
        source=bad.fields.get("source"),
        event_type=bad.fields.get("event_type"),
        entity_id=bad.fields.get("entity_id"),
    )


def _already_delivered(chunk: Sequence[Received], prepared: PreparedBatch, ledger: IngestLedger) -> set[int]:
    """Positions in ``chunk`` whose origin, line and bytes the ledger already holds. One question per
    origin of the batch; the requests are looked at one by one only where the ledger knows some line."""
    shas: dict[int, str] | None = None  # built only if the ledger knows any line (not on a first run)
    skip: set[int] = set()
    for origin, (first, last) in prepared.origins.items():
        known = ledger.delivered(origin, first, last)
        if not known:
            continue
        if shas is None:
            valid = zip(prepared.positions, prepared.receipts.raw_sha, strict=True)
            shas = {i: sha.hex() for i, sha in valid}
            shas.update((i, rej.sha256) for i, rej in prepared.rejected)
        skip.update(
            i
            for i, item in enumerate(chunk)
            if item.origin == origin and item.line is not None and shas[i] in known.get(item.line, ())
        )
    return skip


def _without(prepared: PreparedBatch, skip: set[int]) -> PreparedBatch:
    """``prepared`` less the requests at ``skip``, renumbered."""
    keep = [i for i in range(len(prepared.lines)) if i not in skip]
    new_pos = {old: new for new, old in enumerate(keep)}
    kept = [j for j, i in enumerate(prepared.positions) if i in new_pos]
    packed = None
    if prepared.packed is not None:
        packed = ([prepared.packed[0][j] for j in kept], [prepared.packed[1][j] for j in kept])
    return PreparedBatch(
        lines=[prepared.lines[i] for i in keep],
        positions=[new_pos[prepared.positions[j]] for j in kept],
        receipts=prepared.receipts.select(kept),
        rejected=[(new_pos[i], rej) for i, rej in prepared.rejected if i in new_pos],
        summaries={new_pos[i]: text for i, text in prepared.summaries.items() if i in new_pos},
        packed=packed,
        origins=prepared.origins,
        bodies=[prepared.bodies[j] for j in kept],
        run_id=prepared.run_id,
    )
