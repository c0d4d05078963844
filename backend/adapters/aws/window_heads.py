"""Which (entity, day) windows have aggregate versions, a hundred windows per call: the window heads.

A replay's plan counts the windows it touches that already have versions (its blast radius). Asking the
versions themselves costs one ``Query`` per window, and a plan whose events each touch another window pays
a call per event. So the first version of any metric of a window is written together with a *head* item
of the window, ``PK=ENTITY#<entity>``, ``SK=DAY#<day>#HEAD`` (no ``record``: nothing reads it as a version),
in the same transaction; and the blast radius is ``BatchGetItem`` of the heads, 100 keys per call.

A missing head means "no versions" only on a table whose every window has one. The table says so with the
item ``PK=STACK, SK=WINDOW_HEADS``, written

* by the first version written to an empty table (one ``Scan`` with ``Limit=1`` per process, until the
  record is there), and by ``pik aws init`` on a new table;
* by :class:`HeadsMaintainer` (``pik aws heads-backfill``; ``pik aws init`` through :func:`backfill_heads`)
  on a table that has versions without heads: those of an earlier release of this kit, or of the original
  kit (``SK=DAY#<day>#VER#<seconds>``). It scans the table's keys once, writes the head of each window that
  lacks one, then the record; versions written meanwhile by this release write their heads themselves. An
  interrupted run leaves no record; the next one finds the heads already written and writes the rest.

Without the record (a table not backfilled yet, the original kit's read-only) the plan asks the versions
window by window, as before: slower, never wrong.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.errors import StoreError
from backend.ports import HeadsBackfill
from backend.times import fmt

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

HEAD_SUFFIX = "#HEAD"
RECORD_KEY = {"PK": {"S": "STACK"}, "SK": {"S": "WINDOW_HEADS"}}
BATCH = 100  # BatchGetItem takes at most 100 keys
# A version's SK, this kit's or the original kit's: the window's day is its first field.
_VERSION_SK = re.compile(r"^DAY#(\d{4}-\d{2}-\d{2})#(?:MET#.+#)?VER#\d+$")
_HEAD_SK = re.compile(r"^DAY#(\d{4}-\d{2}-\d{2})#HEAD$")
_ENTITY_PK = "ENTITY#"
WRITE_BATCH = 25  # BatchWriteItem takes at most 25 items
Window = tuple[str, str]  # (entity_id, day)


def head_key(entity_id: str, day: str) -> dict[str, Any]:
    """The key of the head item of window (``entity_id``, ``day``)."""
    return {"PK": str_attr(f"{_ENTITY_PK}{entity_id}"), "SK": str_attr(f"DAY#{day}{HEAD_SUFFIX}")}


def head_put(table: str, entity_id: str, day: str) -> dict[str, Any]:
    """The transaction item that writes the head of (``entity_id``, ``day``): always the same item, so a
    second write (another metric's first version) changes nothing."""
    item = {**head_key(entity_id, day), "entity_id": str_attr(entity_id), "day": str_attr(day)}
    return {"Put": {"TableName": table, "Item": item}}


class WindowHeads:
    """The heads of one aggregates table: whether it keeps them, and which windows have one."""

    def __init__(self, ddb: DynamoDBClient, table: str) -> None:
        self.ddb = ddb
        self.table = table
        self._kept = False
        self._asked_at = 0.0
        self._lock = threading.Lock()

    def kept(self) -> bool:
        """Whether every window with a version has its head (the record is there). Once seen, held for the
        process's life; its absence is asked again after a minute (a backfill may have finished)."""
        with self._lock:
            if self._kept or time.monotonic() - self._asked_at < 60.0:
                return self._kept
            self._asked_at = time.monotonic()
        with aws("read whether the aggregates table keeps window heads"):
            item = self.ddb.get_item(TableName=self.table, Key=RECORD_KEY, ConsistentRead=True).get("Item")
        with self._lock:
            self._kept = self._kept or bool(item)
            return self._kept

    def mark_if_empty(self) -> None:
        """Before the first version a process writes: on an empty table, record that heads are kept (every
        version this release writes has its head). No call once the record is known."""
        if self.kept():
            return
        with aws("look whether the aggregates table is empty"):
            page = self.ddb.scan(TableName=self.table, Limit=1, ProjectionExpression="PK")
        if not page.get("Items") and not page.get("LastEvaluatedKey"):
            self._record()

    def _record(self) -> None:
        with aws("record that the aggregates table keeps window heads"):
            self.ddb.put_item(TableName=self.table, Item={**RECORD_KEY, "since": str_attr(_now())})
        with self._lock:
            self._kept = True

    def having_heads(self, windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The windows among ``windows`` that have a head: ``BatchGetItem``, 100 a call (what it leaves
        unprocessed is asked again)."""
        found: set[tuple[str, str]] = set()
        for start in range(0, len(windows), BATCH):
            keys = [head_key(e, d) for e, d in windows[start : start + BATCH]]
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys,
                    "ProjectionExpression": "entity_id, #d",
                    "ExpressionAttributeNames": {"#d": "day"},
                }
            }
            for attempt in range(10):
                with aws("look for aggregate versions of the plan's windows"):
                    answer = self.ddb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found.add((str(value_of(item, "entity_id")), str(value_of(item, "day"))))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise StoreError("cannot read the window heads: DynamoDB kept leaving keys unprocessed")
        return found


class HeadsMaintainer:
    """The backfill of one aggregates table's heads (``pik aws heads-backfill``)."""

    def __init__(self, ddb: DynamoDBClient, table: str) -> None:
        self.ddb = ddb
        self.table = table

    def backfill(
        self, *, dry_run: bool = False, on_progress: Callable[[str, int], None] | None = None
    ) -> HeadsBackfill:
        """See :meth:`backend.ports.WindowHeadsMaintainer.backfill`."""
        progress = on_progress or (lambda _phase, _n: None)
        with aws("read whether the aggregates table keeps window heads"):
            was_marked = bool(
                self.ddb.get_item(TableName=self.table, Key=RECORD_KEY, ConsistentRead=True).get("Item")
            )
        windows, heads = self._scan(progress)
        lacking = sorted(windows - heads)
        if dry_run:
            return HeadsBackfill(len(windows), len(lacking), 0, was_marked, was_marked)
        self._write(lacking, progress)
        if not was_marked:  # the record last: until it is there, readers ask window by window
            WindowHeads(self.ddb, self.table)._record()
        return HeadsBackfill(len(windows), len(lacking), len(lacking), True, was_marked)

    def _scan(self, progress: Callable[[str, int], None]) -> tuple[set[Window], set[Window]]:
        """The windows that have a version, and those that have a head: one Scan of the table's keys."""
        windows: set[Window] = set()
        heads: set[Window] = set()
        scanned = 0
        kwargs: dict[str, Any] = {"TableName": self.table, "ProjectionExpression": "PK, SK"}
        while True:
            with aws("scan the aggregates table for its windows"):
                page = self.ddb.scan(**kwargs)
            items = page.get("Items", [])
            windows.update(_windows(items))
            heads.update(_heads(items))
            scanned += len(items)
            progress("scanned", scanned)
            if not page.get("LastEvaluatedKey"):
                return windows, heads
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _write(self, windows: Sequence[Window], progress: Callable[[str, int], None]) -> None:
        """Put the heads of ``windows``, 25 per ``BatchWriteItem`` (what it leaves unprocessed is put again).
        A head is always the same item, so a version's transaction putting it meanwhile changes nothing."""
        for start in range(0, len(windows), WRITE_BATCH):
            chunk = windows[start : start + WRITE_BATCH]
            request: dict[str, Any] = {
                self.table: [
                    {"PutRequest": {"Item": head_put(self.table, e, d)["Put"]["Item"]}} for e, d in chunk
                ]
            }
            for attempt in range(10):
                with aws("write window heads"):
                    answer = self.ddb.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise StoreError("cannot write the window heads: DynamoDB kept leaving items unprocessed")
            progress("written", start + len(chunk))


def backfill_heads(ddb: DynamoDBClient, table: str) -> int:
    """Write the head of every window that has a version (this kit's or the original kit's) and lacks one,
    then the record; the number of windows with versions. Idempotent: a second run writes nothing new."""
    return HeadsMaintainer(ddb, table).backfill().windows


def _windows(items: Iterable[dict[str, Any]]) -> Iterable[Window]:
    """The windows of the versions among ``items``."""
    for item in items:
        pk, sk = str(value_of(item, "PK")), str(value_of(item, "SK"))
        match = _VERSION_SK.match(sk)
        if pk.startswith(_ENTITY_PK) and match:
            yield pk[len(_ENTITY_PK) :], match.group(1)


def _heads(items: Iterable[dict[str, Any]]) -> Iterable[Window]:
    """The windows of the head items among ``items``."""
    for item in items:
        pk, sk = str(value_of(item, "PK")), str(value_of(item, "SK"))
        match = _HEAD_SK.match(sk)
        if pk.startswith(_ENTITY_PK) and match:
            yield pk[len(_ENTITY_PK) :], match.group(1)


def _now() -> str:
    return fmt(datetime.now(UTC))
