"""An ordered read over all the shards of one sharded key: a k-way merge.

A sharded stack writes a day of one source/type under N lag-index keys
(``backend.adapters.aws.lag_shards``), an entity's receipts under M keys of the events table and its
rejections under R; each key's items come back from DynamoDB in sort-key order, so the whole in that order
is ``heapq.merge`` of the queries (the lag index by ``GSI1SK``, an entity window and the quarantine by
``SK``: :class:`Keys`). Every shard's first page is read concurrently, and a shard's next page only when
the merge has taken all it had, so a page of the listing costs about one small query per shard, not a
read of the day.

The cursor is the last sort key taken (unique across the shards: a lag key and a receipt's ``SK`` end
with the event id and receipt, a rejection's with its id, and every receipt of an event is in one
shard). It fixes every shard's position at once: shard by shard, the next page starts after that key.
So the cursor stays the size of one key however many shards there are, and paging gives the same rows as
one unsharded query would.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from backend.adapters.aws.connection import POOL_PREFIX, AwsConnection
from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.resources import LAG_INDEX


@dataclass(frozen=True)
class Keys:
    """Where a sharded listing lives: the index (None: the table itself) and its key attributes."""

    index: str | None
    hash_key: str
    range_key: str

    def sort_key(self, item: dict[str, Any]) -> str:
        return str(value_of(item, self.range_key))


LAG_KEYS = Keys(LAG_INDEX.name, LAG_INDEX.hash_key, LAG_INDEX.range_key)
TABLE_KEYS = Keys(None, "PK", "SK")


class _Shard:
    """One key's items after the cursor, in the read's order: its first page read up front, the next
    pages when the merge gets to them."""

    def __init__(self, request: dict[str, Any], skip: str | None, action: str, keys: Keys) -> None:
        self.request = request
        self.skip = skip  # BETWEEN is inclusive: the cursor's own item is left out
        self.action = action
        self.keys = keys
        self.items: list[dict[str, Any]] = []
        self.last: Any = None

    def fetch(self, conn: AwsConnection) -> None:
        with aws(self.action):
            page = conn.ddb.query(**self.request)
        self.items = [i for i in page.get("Items", []) if self.keys.sort_key(i) != self.skip]
        self.last = page.get("LastEvaluatedKey")

    def iterate(self, conn: AwsConnection) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.items
            if not self.last:
                return
            self.request["ExclusiveStartKey"] = self.last
            self.fetch(conn)


def merged(
    conn: AwsConnection,
    pks: Sequence[str],
    bounds: tuple[str, str],
    *,
    descending: bool,
    after: str | None,
    limit: int,
    keep: Callable[[dict[str, Any]], bool],
    action: str,
    keys: Keys = LAG_KEYS,
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` kept items of the partition keys ``pks`` (of ``keys``: the lag index by default)
    with a sort key within ``bounds`` (inclusive), strictly after the sort key ``after`` in the read's
    direction, in sort-key order (largest first if ``descending``); and whether more are left. ``extra``
    is added to every query (a projection, say)."""
    lo, hi = bounds
    if after is not None:
        lo, hi = (lo, after) if descending else (after, hi)
    # Each shard holds about 1/N of the day: a page asks each for twice its share (at least 8), and a
    # shard the merge empties reads its next page.
    per_shard = min(1000, max(8, math.ceil(2 * (limit + 1) / len(pks))))
    shards = [
        _Shard(
            {
                "TableName": conn.t.events,
                **({"IndexName": keys.index} if keys.index else {}),
                "KeyConditionExpression": f"{keys.hash_key} = :pk AND {keys.range_key} BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {
                    ":pk": str_attr(pk),
                    ":lo": str_attr(lo),
                    ":hi": str_attr(hi),
                },
                "ScanIndexForward": not descending,
                "Limit": per_shard if len(pks) > 1 else min(limit + 1, 1000),
                **(extra or {}),
            },
            after,
            action,
            keys,
        )
        for pk in pks
    ]
    if threading.current_thread().name.startswith(POOL_PREFIX):
        for shard in shards:  # already on the pool (a read within a batch): waiting on it could deadlock
            shard.fetch(conn)
    else:
        conn.map_concurrently(lambda s: s.fetch(conn), shards)
    stream = heapq.merge(*(s.iterate(conn) for s in shards), key=keys.sort_key, reverse=descending)
    items: list[dict[str, Any]] = []
    for item in stream:
        if not keep(item):
            continue
        if len(items) == limit:
            return items, True
        items.append(item)
    return items, False
