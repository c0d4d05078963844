"""Small DynamoDB helpers shared by the event index, the audit trail and the aggregates.

The adapter talks to DynamoDB through the low-level client, whose items are typed cells
(``{"S": "text"}``, ``{"N": "12"}``): the builders and :func:`value_of` below go between those and plain
values. :func:`query` reads every page of a query; :func:`transact` and :func:`put_new` are the conditional
writes of the audit trail and the aggregates, retried when they lose to a concurrent transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.errors import aws, error_code, store_error
from backend.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attempts of a transaction that keeps losing to concurrent ones on the same items (TransactionConflict).
CONFLICT_ATTEMPTS = 8


def str_attr(value: str) -> dict[str, Any]:
    """A DynamoDB string cell."""
    return {"S": value}


def num_attr(value: int) -> dict[str, Any]:
    """A DynamoDB number cell."""
    return {"N": str(value)}


def item_size(item: dict[str, Any]) -> int:
    """The size DynamoDB bills a low-level item by (write units are per started 1 KB): each attribute's
    name in UTF-8 plus its value (text in UTF-8, binary as is, a number 1 byte per 2 significant digits
    plus 1, a boolean or null 1 byte)."""
    total = 0
    for name, cell in item.items():
        kind, value = next(iter(cell.items()))
        total += len(name.encode("utf-8"))
        if kind == "S":
            total += len(value.encode("utf-8"))
        elif kind == "B":
            total += len(value)
        elif kind == "N":
            digits = value.lstrip("-").replace(".", "").lstrip("0") or "0"
            total += (len(digits) + 1) // 2 + 1
        elif kind in ("BOOL", "NULL"):
            total += 1
        else:  # sets, lists and maps: not in the items sized here
            raise ValueError(f"item_size: attribute {name!r} is a {kind}")
    return total


def value_of(item: dict[str, Any], name: str) -> Any:
    """A plain value from a low-level DynamoDB item (None if absent)."""
    cell = item.get(name)
    if cell is None:
        return None
    kind, value = next(iter(cell.items()))
    if kind == "N":
        return int(value) if "." not in value and "e" not in value.lower() else float(value)
    if kind == "NULL":
        return None
    return value


def query(ddb: DynamoDBClient, action: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a query, page by page (each page fetched only when needed)."""
    while True:
        with aws(action):
            page = ddb.query(**kwargs)
        yield from page.get("Items", [])
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


def transact(ddb: DynamoDBClient, action: str, items: Sequence[Any]) -> list[str] | None:
    """Run one ``TransactWriteItems``. None when it was written; the cancellation reason codes, one per
    item (``"None"`` for an item that passed), when a condition cancelled it. A conflict with a concurrent
    transaction is retried; anything else raises StoreError (nothing was written)."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            ddb.transact_write_items(TransactItems=list(items))
            return None
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise store_error(action, exc) from None
            reasons = [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]
            if "TransactionConflict" in reasons:
                time.sleep(0.02 * (attempt + 1))
                continue
            if any(r == "ConditionalCheckFailed" for r in reasons):
                return reasons
            raise store_error(action, exc) from None
        except BotoCoreError as exc:
            raise store_error(action, exc) from None
    raise StoreError(f"cannot {action}: concurrent writes kept conflicting")


def put_new(ddb: DynamoDBClient, action: str, table: str, item: dict[str, Any]) -> bool:
    """Put ``item`` unless its key is taken; False (nothing written) when it is."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(PK)")
            return True
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                return False
            if code == "TransactionConflictException":  # a transaction on the same item is under way
                time.sleep(0.02 * (attempt + 1))
                continue
            raise store_error(action, exc) from None
        except BotoCoreError as exc:
            raise store_error(action, exc) from None
    raise StoreError(f"cannot {action}: concurrent writes kept conflicting")
