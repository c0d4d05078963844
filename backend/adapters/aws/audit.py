"""The replay audit trail in DynamoDB (:class:`backend.ports.AuditLog`), on the audit table (``PK``/``SK``).

Each replay is two items holding the same record, written and finished together in one transaction:

* the **listing item** ``PK=REPLAYS``, ``SK=<started_at>#<replay_id>`` (``started_at`` in the stored
  fixed-precision form, so text order is time order): "newest first" is one Query of that partition,
  descending, keyset-paged on ``SK``;
* the **lookup item** ``PK=REPLAY#<replay_id>``, ``SK=REPLAY``: ``get`` is one GetItem, without an index.

Both carry ``record`` (the :class:`~backend.model.ReplayAudit` as JSON, read back exactly) and, for people
reading the table, ``replay_id``, ``outcome``, ``actor``, ``started_at`` and ``finished_at``.

``begin`` puts both with ``attribute_not_exists(PK)`` (a taken replay id cancels it: InvalidRequest).
``finish`` puts both again with the condition ``outcome = RUNNING`` on each, so a record is finished once,
from RUNNING, and the two items never disagree; nothing else writes, and nothing deletes. Replays are
rare, so one partition for the listing is far from DynamoDB's per-partition limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend.adapters.aws.clients import AwsClients
from backend.adapters.aws.dynamo import str_attr, transact, value_of
from backend.adapters.aws.errors import aws
from backend.errors import InvalidRequest
from backend.model import Page, ReplayAudit, ReplayOutcome
from backend.paging import decode_cursor, encode_cursor
from backend.times import TimeFormatError, fmt, parse_iso

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LIST_PK = "REPLAYS"
LOOKUP_SK = "REPLAY"
_KIND = "aws-replay-audit"


def _started(record: ReplayAudit) -> str:
    try:
        return fmt(parse_iso(record.started_at, what="started_at"))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None


def _keys(record: ReplayAudit) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keys of the listing item and of the lookup item."""
    listing = {"PK": str_attr(LIST_PK), "SK": str_attr(f"{_started(record)}#{record.replay_id}")}
    lookup = {"PK": str_attr(f"REPLAY#{record.replay_id}"), "SK": str_attr(LOOKUP_SK)}
    return listing, lookup


def _item(key: dict[str, Any], record: ReplayAudit) -> dict[str, Any]:
    item = {
        **key,
        "replay_id": str_attr(record.replay_id),
        "outcome": str_attr(record.outcome.value),
        "actor": str_attr(record.actor),
        "started_at": str_attr(record.started_at),
        "record": str_attr(record.model_dump_json()),
    }
    if record.finished_at is not None:
        item["finished_at"] = str_attr(record.finished_at)
    return item


def _record(item: dict[str, Any]) -> ReplayAudit:
    return ReplayAudit.model_validate_json(value_of(item, "record"))


class DynamoAudit:
    def __init__(self, clients: AwsClients, table: str) -> None:
        self.ddb: DynamoDBClient = clients.dynamodb
        self.table = table

    def begin(self, record: ReplayAudit) -> None:
        if not record.replay_id:
            raise InvalidRequest("a replay audit record needs a replay_id")
        listing, lookup = _keys(record)
        puts = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _item(key, record),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
            for key in (lookup, listing)
        ]
        if transact(self.ddb, f"write the audit record of replay {record.replay_id}", puts) is not None:
            raise InvalidRequest(f"replay id {record.replay_id!r} is taken")

    def finish(self, record: ReplayAudit) -> None:
        if record.outcome is ReplayOutcome.RUNNING:
            raise InvalidRequest("a replay is finished with its final outcome, not RUNNING")
        listing, lookup = _keys(record)
        puts = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _item(key, record),
                    "ConditionExpression": "outcome = :running",
                    "ExpressionAttributeValues": {":running": str_attr(ReplayOutcome.RUNNING.value)},
                }
            }
            for key in (lookup, listing)
        ]
        reasons = transact(self.ddb, f"finish the audit record of replay {record.replay_id}", puts)
        if reasons is None:
            return
        if reasons[0] != "ConditionalCheckFailed":
            # The record is RUNNING but was begun with another start time: the start is not changed.
            raise InvalidRequest(
                f"replay {record.replay_id!r} started at another time than {record.started_at}: "
                "a record is finished with the start time it was begun with"
            )
        raise InvalidRequest(f"replay {record.replay_id!r} is not running: its record is final")

    def get(self, replay_id: str) -> ReplayAudit | None:
        with aws(f"read the audit record of replay {replay_id}"):
            item = self.ddb.get_item(
                TableName=self.table,
                Key={"PK": str_attr(f"REPLAY#{replay_id}"), "SK": str_attr(LOOKUP_SK)},
                ConsistentRead=True,
            ).get("Item")
        return _record(item) if item else None

    def query(self, *, limit: int = 50, after: str | None = None) -> Page[ReplayAudit]:
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": str_attr(LIST_PK)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if after is not None:
            (sk,) = decode_cursor(_KIND, after, 1)
            if not isinstance(sk, str):
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing")
            kwargs["ExclusiveStartKey"] = {"PK": str_attr(LIST_PK), "SK": str_attr(sk)}
        items: list[dict[str, Any]] = []
        # Pages of at most limit + 1 items: one more than asked says whether there is a next page.
        while len(items) <= limit:
            kwargs["Limit"] = min(limit + 1 - len(items), 1000)
            with aws("read the replay audit trail"):
                page = self.ddb.query(**kwargs)
            items += page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        more = len(items) > limit
        items = items[:limit]
        cursor = encode_cursor(_KIND, [value_of(items[-1], "SK")]) if more else None
        return Page[ReplayAudit](items=[_record(i) for i in items], next_cursor=cursor)
