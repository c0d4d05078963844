"""Counting what a stack held before its rollups were maintained: :class:`AwsRollups`, the
:class:`backend.ports.RollupMaintainer` of an AWS stack (the stream side is
``backend.adapters.aws.rollups``).

The split between the two is a time, the ``cutoff`` in the state item: the stream counts receipts ingested
(rejections received) at or after it, the backfill those before it. So the order is: deploy the rollup
function (the stream is on), then backfill; it sets the cutoff to now, waits ``settle_s`` (longer than an
ingest takes, so that every receipt ingested before the cutoff is written), scans the events table once,
sums in memory and writes the rollup items in transactions of 99 plus the state item, whose ``done``
counts the chunks written: the chunks are in a fixed order (the data before the cutoff never changes), so
an interrupted backfill resumes where it stopped, and none is counted twice. Then it marks the state
``ready`` and readers use the rollups.
"""

from __future__ import annotations

import time
from typing import Any

from backend.adapters.aws.dynamo import num_attr, str_attr, transact, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.rollup_items import META_KEY, Contribution, contribution
from backend.adapters.aws.rollups import RollupWriter, _deltas
from backend.errors import StoreError
from backend.times import Clock, fmt, parse_iso

CHUNK = 99  # rollup items per transaction, beside the state item


class AwsRollups(RollupWriter):
    """The rollups of one events table: the stream's counting and the backfill."""

    def __init__(self, ddb: Any, table: str, *, clock: Clock | None = None) -> None:
        super().__init__(ddb, table)
        self._clock = clock or Clock()

    def _state(self) -> dict[str, Any]:
        with aws("read the rollup state"):
            return dict(
                self.ddb.get_item(TableName=self.table, Key=_meta_key(), ConsistentRead=True).get("Item")
                or {}
            )

    def backfill(self, *, settle_s: float = 60.0) -> int:
        state = self._state()
        if value_of(state, "ready"):
            return 0
        cutoff = value_of(state, "cutoff")
        if cutoff is None:
            cutoff = fmt(self._clock.now())
            with aws("start the rollup backfill"):
                self.ddb.put_item(
                    TableName=self.table,
                    Item={**_meta_key(), "cutoff": str_attr(cutoff), "done": num_attr(0)},
                    ConditionExpression="attribute_not_exists(PK)",
                )
            time.sleep(settle_s)
            state = self._state()
        self._cutoff = cutoff
        found = self._before(cutoff)
        deltas = _deltas(found)
        keys = sorted(deltas)
        done = int(value_of(state, "done") or 0)
        chunks = [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]
        for number, chunk in enumerate(chunks, 1):
            if number <= done:
                continue
            step = {
                "Update": {
                    "TableName": self.table,
                    "Key": _meta_key(),
                    "UpdateExpression": "SET done = :n",
                    "ConditionExpression": "done = :before",
                    "ExpressionAttributeValues": {":n": num_attr(number), ":before": num_attr(number - 1)},
                }
            }
            ungated = [self._update(k, _counters_only(deltas[k])) for k in chunk]
            if transact(self.ddb, "write the rollup backfill", [*ungated, step]) is not None:
                raise StoreError("another rollup backfill is running on this stack; let it finish")
        with aws("finish the rollup backfill"):
            self.ddb.update_item(
                TableName=self.table,
                Key=_meta_key(),
                UpdateExpression="SET ready = :t, counted = :c, days = :t",
                ExpressionAttributeValues={":t": {"BOOL": True}, ":c": num_attr(len(found))},
            )
        return len(found)

    def _before(self, cutoff: str) -> list[Contribution]:
        """What every receipt ingested (rejection received) before ``cutoff`` adds: one scan."""
        out: list[Contribution] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            with aws("scan the events table for the rollup backfill"):
                page = self.ddb.scan(**kwargs)
            for item in page.get("Items", []):
                c = contribution(item, "0")
                if c is None:
                    continue
                when = value_of(item, "ingest_time") or value_of(item, "received_at")
                if fmt(parse_iso(str(when))) < cutoff:
                    out.append(c)
            if not page.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _meta_key() -> dict[str, Any]:
    return {"PK": str_attr(META_KEY[0]), "SK": str_attr(META_KEY[1])}


def _counters_only(delta: Any) -> Any:
    """A backfill's delta without a watermark: the stream's receipts (after the cutoff) set those."""
    delta.first_seq = delta.last_seq = None
    return delta
