"""Writes of the event index in DynamoDB: receipts and rejections (:class:`backend.ports.EventIndex`).

An event id's acceptance is one ``TransactWriteItems``: the dedupe item and the accepted receipt, both
conditional on not being there yet, so exactly one attempt ever wins (invariant 2 of DESIGN.md). A
duplicate is a receipt of its own, written beside the accepted one and never over it. A transaction that
loses to a concurrent one on the same items is tried again. Rejections are quarantined in the events
table, bytes and reason in the item.

The keys and items are in ``backend.adapters.aws.event_items``; the reads in
``backend.adapters.aws.index_reads``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.clients import AwsClients
from backend.adapters.aws.connection import AwsConnection
from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import error_code, store_error
from backend.adapters.aws.event_items import (
    ACCEPTED_RECEIPT,
    dedupe_item,
    event_item,
    line_update,
    rejection_item,
)
from backend.adapters.aws.lag_shards import ENTITY, LAG, REJECTION
from backend.errors import StoreError
from backend.model import EventRecord, Rejection
from backend.ports import Claim, Recorded


class _ReceiptIds:
    """Receipt ids that sort in arrival order: ``1`` + 19-digit epoch nanoseconds + 4 hex digits, strictly
    increasing within a process (the accepted receipt is ``0``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            ns = self._last
        return f"1{ns:019d}{threading.get_ident() & 0xFFFF:04x}"


class _Conflict(Exception):
    """A transaction lost to a concurrent one on the same item; the caller tries again."""


class EventIndexWrites(AwsConnection):
    """The writing half of :class:`backend.ports.EventIndex`: ``record`` and ``quarantine``."""

    def __init__(
        self,
        clients: AwsClients,
        bucket: str,
        events_table: str,
        dedupe_table: str,
        *,
        workers: int = 16,
        lag_shards: int | None = None,
        entity_shards: int | None = None,
        rejection_shards: int | None = None,
    ) -> None:
        super().__init__(
            clients,
            bucket,
            events_table,
            dedupe_table,
            workers=workers,
            lag_shards=lag_shards,
            entity_shards=entity_shards,
            rejection_shards=rejection_shards,
        )
        self._receipts = _ReceiptIds()
        # (lag, entity) shards to write receipts with, and rejection shards: settled on first use.
        self._write_shards: tuple[int, int] | None = None
        self._quarantine_shards: int | None = None

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        if claims is not None and len(claims) != len(records):
            raise ValueError("record: one claim per record")
        # Receipts of one event id go in order; different ids go concurrently.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(r.event_id, []).append(i)
        outcomes: list[Recorded | None] = [None] * len(records)
        if records and self._write_shards is None:
            self._write_shards = (self.write_shards(LAG), self.write_shards(ENTITY))

        def run(indices: list[int]) -> None:
            for i in indices:
                outcomes[i] = self._record_one(records[i], claims[i] if claims else Claim.STORED)

        self.map_concurrently(run, list(groups.values()))
        return [o for o in outcomes if o is not None]

    def _item(self, r: EventRecord, receipt: str) -> dict[str, Any]:
        lag, entity = self._write_shards or (1, 1)
        return event_item(r, receipt, self.t.bucket, lag, entity)

    def _record_one(self, r: EventRecord, claim: Claim) -> Recorded:
        """Record one delivery. Its receipt id is chosen once: every attempt (botocore's retries, the kit's
        own after an ambiguous failure, those after a conflict) writes the same items, and an attempt that
        finds them already written by an earlier one of the same delivery takes them as its own."""
        receipt = self._receipts.next()
        action = f"record event {r.event_id}"
        for _ in range(8):  # a transaction conflict with a concurrent writer of the same id: try again
            try:
                return self.retrying(lambda: self._attempt(r, claim, receipt))
            except _Conflict:
                time.sleep(0.02)
            except (ClientError, BotoCoreError) as exc:
                raise store_error(action, exc) from None
        raise StoreError(f"cannot record event {r.event_id}: concurrent writes kept conflicting")

    def _attempt(self, r: EventRecord, claim: Claim, receipt: str) -> Recorded:
        """One try at recording ``r`` (raises botocore's errors, and _Conflict)."""
        if claim is Claim.STORED:
            accepted = self._try_accept(r)
            if accepted is not None:
                return accepted
            self._put_duplicate(r, receipt)
            return Recorded.DUPLICATE
        outcome = self._try_duplicate(r, receipt, verify=claim is Claim.UNVERIFIED)
        if outcome is not Recorded.UNSEEN or claim is Claim.UNVERIFIED:
            return outcome
        accepted = self._try_accept(r)
        if accepted is not None:
            return accepted
        # Accepted meanwhile by someone else: a duplicate after all.
        outcome = self._try_duplicate(r, receipt, verify=False)
        if outcome is Recorded.UNSEEN:
            raise _Conflict(f"record event {r.event_id}")
        return outcome

    def _line_update(self, r: EventRecord) -> list[Any]:
        """The transaction item that notes ``r``'s origin, line and bytes (the ingest ledger), if it has a
        line: written with the receipt, so the ledger never says more or less than the index holds."""
        if r.line is None or r.origin is None or r.raw_sha is None:
            return []
        return [line_update(self.t.dedupe, r.origin, r.line, r.raw_sha)]

    def _try_accept(self, r: EventRecord) -> Recorded | None:
        """ACCEPTED if this delivery is the acceptance (now, or by an earlier attempt of it); None if the
        event id was accepted before by another delivery."""
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.t.dedupe,
                            "Item": dedupe_item(r, (self._write_shards or (1, 1))[1]),
                            "ConditionExpression": "attribute_not_exists(event_id)",
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.t.events,
                            "Item": self._item(r, ACCEPTED_RECEIPT),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    *self._line_update(r),
                ]
            )
            return Recorded.ACCEPTED
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                if _own(exc, 0, r):  # an earlier attempt of this delivery was the acceptance
                    return Recorded.ACCEPTED
                return None
            raise

    def _try_duplicate(self, r: EventRecord, receipt: str, *, verify: bool) -> Recorded:
        """Write ``r`` as a duplicate receipt if the event id is accepted (and, with ``verify``, if the
        accepted receipt points at the same key with the same sha256); else write nothing. ACCEPTED if the
        acceptance is this very delivery's (an earlier attempt of it)."""
        condition = "attribute_exists(event_id)"
        values: dict[str, Any] = {}
        if verify:
            condition += " AND s3_key = :key AND raw_sha = :sha"
            values = {":key": str_attr(r.s3_key), ":sha": str_attr(r.raw_sha or "")}
        if r.delivery is not None:
            condition += " AND (attribute_not_exists(delivery) OR delivery <> :delivery)"
            values[":delivery"] = str_attr(r.delivery)
        check: Any = {
            "TableName": self.t.dedupe,
            "Key": {"event_id": str_attr(r.event_id)},
            "ConditionExpression": condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values:
            check["ExpressionAttributeValues"] = values
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {"ConditionCheck": check},
                    {"Put": self._receipt_put(r, receipt)},
                    *self._line_update(r),
                ]
            )
            return Recorded.DUPLICATE
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                if _own(exc, 0, r):
                    return Recorded.ACCEPTED
                cancelled: Any = exc.response.get("CancellationReasons") or [{}]
                old = cancelled[0].get("Item")
                if old and value_of(old, "s3_key") == r.s3_key:
                    return Recorded.MISPLACED  # the accepted bytes under this very key are other bytes
                return Recorded.UNSEEN
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed" and _own(exc, 1, r):
                return Recorded.DUPLICATE  # an earlier attempt of this delivery wrote this receipt
            raise

    def _receipt_put(self, r: EventRecord, receipt: str) -> Any:
        return {
            "TableName": self.t.events,
            "Item": self._item(r, receipt),
            "ConditionExpression": "attribute_not_exists(PK)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _put_duplicate(self, r: EventRecord, receipt: str) -> None:
        """Write duplicate receipt ``receipt`` of ``r`` (its event id is accepted by another delivery)."""
        line = self._line_update(r)
        try:
            if line:
                self.ddb.transact_write_items(TransactItems=[{"Put": self._receipt_put(r, receipt)}, *line])
            else:
                self.ddb.put_item(**self._receipt_put(r, receipt))
        except ClientError as exc:
            mine = _delivery(exc.response.get("Item")) == r.delivery
            if error_code(exc) == "ConditionalCheckFailedException" and mine and r.delivery is not None:
                return  # an earlier attempt of this delivery wrote it
            reasons = self._cancellation(exc, f"record duplicate of event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed" and _own(exc, 0, r):
                return
            raise

    @staticmethod
    def _cancellation(exc: ClientError, action: str) -> list[str]:
        """The cancellation reason codes of a cancelled transaction (raises _Conflict on a conflict)."""
        if error_code(exc) != "TransactionCanceledException":
            return []
        reasons = [str(x.get("Code", "None")) for x in exc.response.get("CancellationReasons", [])]
        if "TransactionConflict" in reasons:
            raise _Conflict(action)
        return reasons

    def quarantine(self, rejections: Sequence[Rejection]) -> list[str]:
        ids = [f"{r.received_at}#{self._receipts.next()[1:]}" for r in rejections]
        if rejections and self._quarantine_shards is None:
            self._quarantine_shards = self.write_shards(REJECTION)
        shards = self._quarantine_shards or 1
        requests = [
            {"Put": {"TableName": self.t.events, "Item": rejection_item(rid, r, shards)}}
            for rid, r in zip(ids, rejections, strict=True)
        ]
        # Puts in transactions (up to 100 items and 4 MB each): the role needs PutItem only, never the
        # BatchWriteItem right that would also allow deletes. A rejection with a line number takes a second
        # item, the ledger's note of its line (one per line and transaction).
        chunk: list[Any] = []
        lines: set[tuple[str, int]] = set()
        size = 0
        for request, r in zip(requests, rejections, strict=True):
            item_size = len(r.data) + len(r.reason) + 1024
            line = (r.origin, r.line) if r.line is not None else None
            if chunk and (len(chunk) >= 99 or size + item_size > 3_500_000 or line in lines):
                self._transact_puts(chunk)
                chunk, size, lines = [], 0, set()
            chunk.append(request)
            if line is not None:
                chunk.append(line_update(self.t.dedupe, r.origin, line[1], r.sha256))
                lines.add(line)
            size += item_size
        if chunk:
            self._transact_puts(chunk)
        return ids

    def _transact_puts(self, puts: list[Any]) -> None:
        # Unconditional puts of items whose keys were chosen before the first attempt: trying again after an
        # ambiguous failure rewrites the same items with the same values.
        for _ in range(8):
            try:
                self.retrying(lambda: self.ddb.transact_write_items(TransactItems=puts))
                return
            except ClientError as exc:
                try:
                    self._cancellation(exc, "quarantine rejected events")
                except _Conflict:
                    time.sleep(0.02)
                    continue
                raise store_error("quarantine rejected events", exc) from None
            except BotoCoreError as exc:
                raise store_error("quarantine rejected events", exc) from None
        raise StoreError("cannot quarantine rejected events: concurrent writes kept conflicting")


def _delivery(item: Any) -> str | None:
    return value_of(item, "delivery") if item else None


def _own(exc: ClientError, position: int, r: EventRecord) -> bool:
    """Whether the item that failed the condition at ``position`` of a cancelled transaction was written by
    the delivery of ``r`` (an earlier attempt of it whose answer was lost)."""
    if r.delivery is None:
        return False
    cancelled: Any = exc.response.get("CancellationReasons") or []
    if len(cancelled) <= position:
        return False
    return _delivery(cancelled[position].get("Item")) == r.delivery
