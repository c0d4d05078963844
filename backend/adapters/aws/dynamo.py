"""Small DynamoDB helpers shared by the audit trail and the aggregates (low-level client, plain items)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.store import _aws, _code, _error
from backend.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attempts of a transaction that keeps losing to concurrent ones on the same items (TransactionConflict).
CONFLICT_ATTEMPTS = 8


def query(ddb: DynamoDBClient, action: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a query, page by page (each page fetched only when needed)."""
    while True:
        with _aws(action):
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
            if _code(exc) != "TransactionCanceledException":
                raise _error(action, exc) from None
            reasons = [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]
            if "TransactionConflict" in reasons:
                time.sleep(0.02 * (attempt + 1))
                continue
            if any(r == "ConditionalCheckFailed" for r in reasons):
                return reasons
            raise _error(action, exc) from None
        except BotoCoreError as exc:
            raise _error(action, exc) from None
    raise StoreError(f"cannot {action}: concurrent writes kept conflicting")


def put_new(ddb: DynamoDBClient, action: str, table: str, item: dict[str, Any]) -> bool:
    """Put ``item`` unless its key is taken; False (nothing written) when it is."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(PK)")
            return True
        except ClientError as exc:
            code = _code(exc)
            if code == "ConditionalCheckFailedException":
                return False
            if code == "TransactionConflictException":  # a transaction on the same item is under way
                time.sleep(0.02 * (attempt + 1))
                continue
            raise _error(action, exc) from None
        except BotoCoreError as exc:
            raise _error(action, exc) from None
    raise StoreError(f"cannot {action}: concurrent writes kept conflicting")
