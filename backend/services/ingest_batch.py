"""What ingest hands from its prepare step to its commit step, and what a commit answers.

:class:`PreparedBatch` is a validated batch as columns of plain values (:class:`ReceiptColumns`): that is
what a prepare worker process sends back, and what a store writes from, so the one process that stores
does little more per request than the inserts. :class:`Committed` tells a stored batch by its counts and
its few exceptional requests (duplicates, rejections); the per-request answers (:class:`IngestResult`)
are built only for a caller that asks for them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.identity import raw_key
from backend.model import IngestResult, IngestStatus, Rejection
from backend.ports import NewReceipt, ReceiptColumns


def delivery_of(run_id: str, origin: str, line: int | None, raw_sha: bytes) -> bytes:
    """The identity of one delivery: for a numbered line, sha256 over the run, the origin, the line and the
    bytes' sha256 (the same line read again by the same run is the same delivery); without a line number,
    random (two identical API requests are two deliveries)."""
    if line is None:
        return uuid.uuid4().bytes + uuid.uuid4().bytes
    return hashlib.sha256(f"{run_id}|{origin}|{line}|{raw_sha.hex()}".encode()).digest()


def _no_receipts() -> ReceiptColumns:
    return ReceiptColumns.of(())


@dataclass(slots=True)
class PreparedBatch:
    """A validated batch, ready to store. ``lines``: each request's line (None: not numbered).
    ``positions``: the position in the batch of each valid request, whose receipt is at the same index of
    ``receipts`` (``key`` there is the identity key; a receipt with other bytes gets another key at
    commit) and whose exact bytes are at the same index of ``bodies``. ``rejected``: the others, with the
    reason. ``origins``: the first and last line of each origin's numbered requests.

    Sent between processes as columns of plain values, without ``bodies``: the process that sent the
    requests to prepare has them already (:meth:`attach`)."""

    lines: list[int | None]
    positions: list[int] = field(default_factory=list)
    receipts: ReceiptColumns = field(default_factory=_no_receipts)
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)
    # The rejections' reasons without any value from the request (Invalid.summary), by position: for logs.
    summaries: dict[int, str] = field(default_factory=dict)
    # The valid bodies as the store keeps them (codecs, stored forms; RawPacker), if prepared with a packer.
    packed: tuple[list[int], list[bytes]] | None = None
    origins: dict[str, tuple[int, int]] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)
    run_id: str = ""  # the run the deliveries are of (see complete)

    @property
    def valid(self) -> list[tuple[int, bytes, NewReceipt]]:
        """Each valid request as (position, bytes, receipt), in order."""
        return list(zip(self.positions, self.bodies, self.complete().receipts(), strict=True))

    def complete(self) -> ReceiptColumns:
        """The receipts with their deliveries and identity keys, derived on the first call (a batch is
        prepared without them: the local store needs neither). Kept, so a delivery made up for a request
        without a line number is the same on every later call."""
        cols = self.receipts
        n = len(cols.event_id)
        if len(cols.delivery) == n and len(cols.key) == n:
            return cols
        deliveries = [
            delivery_of(self.run_id, origin, line, sha)
            for origin, line, sha in zip(cols.origin, cols.line, cols.raw_sha, strict=True)
        ]
        keys = [raw_key(*part, eid.hex()) for part, eid in zip(cols.partition, cols.event_id, strict=True)]
        self.receipts = cols._replace(delivery=deliveries, key=keys)
        return self.receipts

    def attach(self, bodies: Sequence[bytes]) -> None:
        """Give a batch received from another process its valid requests' bytes: ``bodies`` are every
        request's of the batch, in order (the ones sent to prepare it)."""
        self.bodies = [bodies[i] for i in self.positions]

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.lines, self.positions, tuple(self.receipts), self.rejected, self.summaries, self.packed,
            self.origins, self.run_id,
        )  # fmt: skip

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        lines, self.positions, receipts, self.rejected, self.summaries, self.packed, self.origins = state[:7]
        self.lines, self.run_id = lines, state[7]
        self.receipts = ReceiptColumns(*receipts)
        self.bodies = []


@dataclass(slots=True)
class Committed:
    """One stored batch. ``duplicates``: the indexes (in ``prepared.positions``) of the receipts stored
    as DUPLICATE, in order; every other valid request was ACCEPTED. ``rejection_ids``: the quarantine's id
    of each of ``prepared.rejected``. ``keys``: where each valid request's bytes are, if not all at their
    identity keys (None: all are)."""

    prepared: PreparedBatch
    duplicates: list[int]
    rejection_ids: list[str]
    keys: list[str] | None = None

    @property
    def accepted(self) -> int:
        return len(self.prepared.positions) - len(self.duplicates)

    @property
    def duplicate(self) -> int:
        return len(self.duplicates)

    @property
    def rejected(self) -> int:
        return len(self.prepared.rejected)

    @property
    def clock_skew(self) -> int:
        """How many of the stored events have an event time ahead of their ingest time."""
        return sum(self.prepared.receipts.clock_skew)

    def rejections(self) -> list[tuple[int | None, str]]:
        """Each rejected request's line and reason, in order."""
        lines = self.prepared.lines
        return [(lines[i], rejection.reason) for i, rejection in self.prepared.rejected]

    def results(self) -> list[IngestResult]:
        """One result per request, in order: what :meth:`IngestService.commit` answers."""
        prepared = self.prepared
        lines = prepared.lines
        results: list[IngestResult | None] = [None] * len(lines)
        for (i, rej), rid in zip(prepared.rejected, self.rejection_ids, strict=True):
            results[i] = IngestResult(
                status=IngestStatus.REJECTED,
                reason=rej.reason,
                rejection_id=rid,
                line=lines[i],
                ingest_time=rej.received_at,
            )
        cols = prepared.receipts
        keys = self.keys if self.keys is not None else prepared.complete().key
        duplicates = set(self.duplicates)
        for j, i in enumerate(prepared.positions):
            results[i] = IngestResult(
                status=IngestStatus.DUPLICATE if j in duplicates else IngestStatus.ACCEPTED,
                event_id=cols.event_id[j].hex(),
                ingest_lag_ms=cols.ingest_lag_ms[j],
                s3_key=keys[j],
                event_time=cols.event_time[j],
                ingest_time=cols.ingest_time[j],
                clock_skew=cols.clock_skew[j],
                line=lines[i],
            )
        return [r for r in results if r is not None]
