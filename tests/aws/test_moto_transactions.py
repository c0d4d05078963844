"""The test suite's moto speed-up (tests/moto_transactions.py) keeps DynamoDB's transaction semantics: all
or nothing, with the table copied once per transaction instead of once per item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb import models

from tests import moto_transactions


@pytest.fixture
def ddb() -> Iterator[Any]:
    moto_transactions.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def _put(key: str, value: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": "t",
            "Item": {"PK": {"S": key}, "v": {"S": value}},
            "ConditionExpression": "attribute_not_exists(PK)",
        }
    }


def _items(ddb: Any) -> dict[str, str]:
    return {i["PK"]["S"]: i["v"]["S"] for i in ddb.scan(TableName="t")["Items"]}


def test_a_transaction_that_fails_on_its_last_item_writes_nothing(ddb: Any) -> None:
    ddb.transact_write_items(TransactItems=[_put("a", "1"), _put("b", "1")])
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=[_put("c", "2"), _put("d", "2"), _put("a", "2")])
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _items(ddb) == {"a": "1", "b": "1"}
    ddb.transact_write_items(TransactItems=[_put("c", "3"), _put("d", "3")])
    assert _items(ddb) == {"a": "1", "b": "1", "c": "3", "d": "3"}


def test_a_table_is_copied_once_per_transaction_whatever_its_items(
    ddb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied: list[str] = []
    real = moto_transactions._deepcopy

    def counting(obj: Any, memo: Any = None) -> Any:
        if isinstance(obj, models.Table):
            copied.append(obj.name)
        return real(obj, memo)

    monkeypatch.setattr(moto_transactions, "_deepcopy", counting)
    ddb.transact_write_items(TransactItems=[_put(f"k{i}", "x") for i in range(25)])
    assert copied == ["t"] and len(_items(ddb)) == 25
    with pytest.raises(ClientError):
        ddb.transact_write_items(TransactItems=[_put("new", "x"), _put("k0", "y")])
    assert copied == ["t", "t"] and "new" not in _items(ddb)
