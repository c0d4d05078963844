"""Maintaining the rollups from the events table's stream, off the ingest path (``docs/aws.md``,
"Rollups"): :class:`RollupWriter` sums a batch of stream records in memory and writes one update per
rollup item it touches, all of them in one ``TransactWriteItems`` (up to 100 items; a batch that touches
more is split into runs of consecutive records, each one transaction).

Counted once, whatever Lambda retries: every receipt is gated by the rollup item of its (entity, event
day), whose ``wm`` attribute holds the stream sequence number of the last receipt it counted. Receipts of
one entity share one partition key, and DynamoDB Streams delivers the records of one key in sequence-number
order (also across shard splits and with a parallelization factor above 1), so "counted" is exactly
"sequence number <= wm". The transaction's update of that item is conditional on ``wm < first sequence
number it adds``; a replayed batch (a retry, a bisected half, a redelivery) fails the condition, the writer
reads the watermarks of the gated items, drops the records already counted and writes the rest. The normal
path reads nothing. Rejections are gated the same way by their day's item (they share the ``REJECTED`` key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import query, str_attr, transact, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.rollup_items import (
    META_KEY,
    Contribution,
    Delta,
    Key,
    contribution,
)
from backend.errors import StoreError
from backend.ports import RollupBatch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

MAX_ITEMS = 100  # TransactWriteItems takes at most 100 actions
MAX_COUNTERS = 200  # counters of one item in one update (the update expression stays far below 4 KB)


@dataclass(frozen=True)
class StreamRecord:
    """One record of a DynamoDB stream as Lambda delivers it (``eventName``, ``dynamodb.SequenceNumber``,
    ``dynamodb.NewImage``)."""

    event_name: str
    seq: str
    image: dict[str, Any] | None

    @classmethod
    def from_event(cls, record: dict[str, Any]) -> StreamRecord:
        body = record.get("dynamodb") or {}
        seq = body.get("SequenceNumber")
        if not isinstance(seq, str) or not seq.isdigit():
            raise ValueError(f"stream record {record.get('eventID')!r} has no SequenceNumber")
        return cls(str(record.get("eventName")), seq, body.get("NewImage"))


class RollupWriter:
    """Applies stream records to the rollup items of ``table``."""

    def __init__(self, ddb: DynamoDBClient, table: str, *, cutoff: str | None = None) -> None:
        self.ddb = ddb
        self.table = table
        self._cutoff = cutoff

    def cutoff(self) -> str | None:
        """Receipts ingested before this time are the backfill's to count; None until a backfill has
        started (then the stream counts nothing: the backfill will count it all). Read from the state item
        once it exists, before that on every batch."""
        if self._cutoff is None:
            with aws("read the rollup state"):
                item = self.ddb.get_item(
                    TableName=self.table,
                    Key={"PK": str_attr(META_KEY[0]), "SK": str_attr(META_KEY[1])},
                    ConsistentRead=True,
                ).get("Item")
            if item:
                self._cutoff = str(value_of(item, "cutoff") or "")
        return self._cutoff

    def apply_stream(self, records: Sequence[Mapping[str, Any]]) -> RollupBatch:
        """:meth:`backend.ports.RollupMaintainer.apply_stream` on Lambda's DynamoDB stream records."""
        return self.apply([StreamRecord.from_event(dict(r)) for r in records])

    def apply(self, records: Sequence[StreamRecord]) -> RollupBatch:
        """Count the INSERTs of ``records`` (one shard's batch, in stream order) exactly once."""
        found: list[Contribution] = []
        ignored = 0
        cutoff = self.cutoff()
        for record in records:
            c = None
            if record.event_name == "INSERT" and record.image is not None and cutoff is not None:
                c = contribution(record.image, record.seq, cutoff)
            if c is None:
                ignored += 1  # events are append-only: a MODIFY or REMOVE changes no count
            else:
                found.append(c)
        counted = replayed = transactions = 0
        for run in _runs(found):
            pending = run
            while pending:
                transactions += 1
                if self._write(pending):
                    counted += len(pending)
                    break
                marks = self._watermarks({c.gate for c in pending})
                fresh = [c for c in pending if c.seq > marks.get(c.gate, "")]
                replayed += len(pending) - len(fresh)
                if len(fresh) == len(pending):
                    raise StoreError("rollup update refused although no record was counted before")
                pending = fresh
        return RollupBatch(counted, replayed, ignored, transactions)

    def _write(self, run: Sequence[Contribution]) -> bool:
        """One transaction adding ``run``; False when a gate says some of it was counted before."""
        deltas = _deltas(run)
        items = [self._update(key, delta) for key, delta in deltas.items()]
        return transact(self.ddb, "update the rollups", items) is None

    def _update(self, key: Key, delta: Delta) -> dict[str, Any]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds = []
        for i, (name, amount) in enumerate(sorted(delta.counters.items())):
            names[f"#c{i}"] = name
            values[f":c{i}"] = {"N": str(amount)}
            adds.append(f"#c{i} :c{i}")
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"PK": str_attr(key[0]), "SK": str_attr(key[1])},
            "UpdateExpression": "ADD " + ", ".join(adds),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if delta.first_seq is not None and delta.last_seq is not None:
            update["UpdateExpression"] += " SET wm = :last"
            update["ConditionExpression"] = "attribute_not_exists(wm) OR wm < :first"
            values[":first"] = str_attr(delta.first_seq)
            values[":last"] = str_attr(delta.last_seq)
        return {"Update": update}

    def _watermarks(self, keys: Iterable[Key]) -> dict[Key, str]:
        wanted = list(keys)
        out: dict[Key, str] = {}
        for start in range(0, len(wanted), 100):
            request: Any = {
                self.table: {
                    "Keys": [
                        {"PK": str_attr(pk), "SK": str_attr(sk)} for pk, sk in wanted[start : start + 100]
                    ],
                    "ProjectionExpression": "PK, SK, wm",
                    "ConsistentRead": True,
                }
            }
            while request:
                with aws("read the rollup watermarks"):
                    answer = self.ddb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    out[(value_of(item, "PK"), value_of(item, "SK"))] = str(value_of(item, "wm") or "")
                request = answer.get("UnprocessedKeys") or None
        return out


def _deltas(run: Sequence[Contribution]) -> dict[Key, Delta]:
    deltas: dict[Key, Delta] = {}
    for c in run:
        for key, adds in c.adds.items():
            delta = deltas.setdefault(key, Delta())
            for name, amount in adds.items():
                delta.add(name, amount)
        deltas[c.gate].gate(c.seq)
    return deltas


def _runs(found: Sequence[Contribution]) -> list[list[Contribution]]:
    """Consecutive records grouped so that each group touches at most MAX_ITEMS items and at most
    MAX_COUNTERS counters of any one item."""
    runs: list[list[Contribution]] = []
    current: list[Contribution] = []
    names: dict[Key, set[str]] = {}
    for c in found:
        grown = {k: names.get(k, set()) | set(a) for k, a in c.adds.items()}
        too_many = len(names.keys() | grown.keys()) > MAX_ITEMS
        if current and (too_many or any(len(v) > MAX_COUNTERS for v in grown.values())):
            runs.append(current)
            current, names = [], {}
            grown = {k: set(a) for k, a in c.adds.items()}
        current.append(c)
        names.update(grown)
    if current:
        runs.append(current)
    return runs


def rollup_items(ddb: DynamoDBClient, table: str, pk: str, lo: str, hi: str) -> list[dict[str, Any]]:
    """The rollup items of ``pk`` with ``lo <= SK <= hi``."""
    return list(
        query(
            ddb,
            "read the rollups",
            TableName=table,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":pk": str_attr(pk), ":lo": str_attr(lo), ":hi": str_attr(hi)},
        )
    )
