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
from backend.adapters.aws.errors import aws, error_code, store_error
from backend.adapters.aws.event_items import ACCEPTED_RECEIPT, dedupe_item, event_item, rejection_item
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
        self, clients: AwsClients, bucket: str, events_table: str, dedupe_table: str, *, workers: int = 16
    ) -> None:
        super().__init__(clients, bucket, events_table, dedupe_table, workers=workers)
        self._receipts = _ReceiptIds()

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        if claims is not None and len(claims) != len(records):
            raise ValueError("record: one claim per record")
        # Receipts of one event id go in order; different ids go concurrently.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(r.event_id, []).append(i)
        outcomes: list[Recorded | None] = [None] * len(records)

        def run(indices: list[int]) -> None:
            for i in indices:
                outcomes[i] = self._record_one(records[i], claims[i] if claims else Claim.STORED)

        self.map_concurrently(run, list(groups.values()))
        return [o for o in outcomes if o is not None]

    def _record_one(self, r: EventRecord, claim: Claim) -> Recorded:
        for _ in range(8):  # a transaction conflict with a concurrent writer of the same id: try again
            try:
                if claim is Claim.STORED:
                    accepted = self._try_accept(r)
                    if accepted is not None:
                        return accepted
                    self._put_duplicate(r)
                    return Recorded.DUPLICATE
                outcome = self._try_duplicate(r, verify=claim is Claim.UNVERIFIED)
                if outcome is not Recorded.UNSEEN or claim is Claim.UNVERIFIED:
                    return outcome
                accepted = self._try_accept(r)
                if accepted is not None:
                    return accepted
                claim = Claim.SEEN  # accepted meanwhile by someone else: a duplicate after all
            except _Conflict:
                time.sleep(0.02)
        raise StoreError(f"cannot record event {r.event_id}: concurrent writes kept conflicting")

    def _try_accept(self, r: EventRecord) -> Recorded | None:
        """ACCEPTED if this receipt became the acceptance; None if the event id was accepted before."""
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.t.dedupe,
                            "Item": dedupe_item(r),
                            "ConditionExpression": "attribute_not_exists(event_id)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.t.events,
                            "Item": event_item(r, ACCEPTED_RECEIPT, self.t.bucket),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                ]
            )
            return Recorded.ACCEPTED
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return None
            raise store_error(f"record event {r.event_id}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"record event {r.event_id}", exc) from None

    def _try_duplicate(self, r: EventRecord, *, verify: bool) -> Recorded:
        """Write ``r`` as a duplicate receipt if the event id is accepted (and, with ``verify``, if the
        accepted receipt points at the same key with the same sha256); else write nothing."""
        condition = "attribute_exists(event_id)"
        values: dict[str, Any] = {}
        if verify:
            condition += " AND s3_key = :key AND raw_sha = :sha"
            values = {":key": str_attr(r.s3_key), ":sha": str_attr(r.raw_sha or "")}
        check: Any = {
            "TableName": self.t.dedupe,
            "Key": {"event_id": str_attr(r.event_id)},
            "ConditionExpression": condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values:
            check["ExpressionAttributeValues"] = values
        receipt = self._receipts.next()
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {"ConditionCheck": check},
                    {
                        "Put": {
                            "TableName": self.t.events,
                            "Item": event_item(r, receipt, self.t.bucket),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                ]
            )
            return Recorded.DUPLICATE
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                cancelled: Any = exc.response.get("CancellationReasons") or [{}]
                old = cancelled[0].get("Item")
                if old and value_of(old, "s3_key") == r.s3_key:
                    return Recorded.MISPLACED  # the accepted bytes under this very key are other bytes
                return Recorded.UNSEEN
            raise store_error(f"record event {r.event_id}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"record event {r.event_id}", exc) from None

    def _put_duplicate(self, r: EventRecord) -> None:
        with aws(f"record duplicate of event {r.event_id}"):
            self.ddb.put_item(
                TableName=self.t.events,
                Item=event_item(r, self._receipts.next(), self.t.bucket),
                ConditionExpression="attribute_not_exists(PK)",
            )

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
        requests = [
            {"Put": {"TableName": self.t.events, "Item": rejection_item(rid, r)}}
            for rid, r in zip(ids, rejections, strict=True)
        ]
        # Puts in transactions (up to 100 items and 4 MB each): the role needs PutItem only, never the
        # BatchWriteItem right that would also allow deletes.
        chunk: list[Any] = []
        size = 0
        for request, r in zip(requests, rejections, strict=True):
            item_size = len(r.data) + len(r.reason) + 1024
            if chunk and (len(chunk) == 100 or size + item_size > 3_500_000):
                self._transact_puts(chunk)
                chunk, size = [], 0
            chunk.append(request)
            size += item_size
        if chunk:
            self._transact_puts(chunk)
        return ids

    def _transact_puts(self, puts: list[Any]) -> None:
        for _ in range(8):
            try:
                self.ddb.transact_write_items(TransactItems=puts)
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
