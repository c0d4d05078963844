"""`pik aws init` against a moto server on 127.0.0.1: it creates what resources.py defines, a second run
reuses it all, its export lines point the kit at the resources, and failures are one line.

Nothing here can reach real AWS: credentials are placeholders, the config files are empty, and every
socket connection to anything but the loopback interface is refused (and fails the test).
"""

from __future__ import annotations

import io
import json
import shlex
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from backend.adapters.aws import resources as res
from pik_console.cli import main

REGION = "us-east-1"  # what `pik aws init` assumes for an endpoint when no region is configured
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The moto server, emptied, with an environment that has placeholder credentials and no region."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if not (isinstance(address, tuple) and address[0] in LOOPBACK):
            attempts.append(address)
            raise OSError(f"a test tried to connect to {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "PIK_BACKEND",
        "PIK_WORKSPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    yield moto_url
    assert attempts == [], "a test tried to leave the loopback interface"


def pik(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def exports(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of the output, as the shell would read them."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            (found[name],) = shlex.split(value)
    return found


def client(service: str, url: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=url, region_name=REGION)


def test_init_creates_what_resources_py_defines(endpoint: str) -> None:
    code, out, err = pik("aws", "init", "--endpoint-url", endpoint)
    assert (code, err) == (0, "")
    settings = exports(out)
    assert list(settings) == list(res.SETTINGS)  # configured credentials are not echoed
    assert out.count("# created ") == 7 and "# reused" not in out
    assert f"--backend aws --endpoint-url {endpoint} --region {REGION}" in out

    ddb = client("dynamodb", endpoint)
    for spec in res.TABLES:
        assert settings[spec.setting] == f"pik-{spec.default_name}"
        table = ddb.describe_table(TableName=settings[spec.setting])["Table"]
        expected = spec.create_table_kwargs(settings[spec.setting])
        assert table["KeySchema"] == expected["KeySchema"]
        assert {g["IndexName"]: g["KeySchema"] for g in table.get("GlobalSecondaryIndexes", [])} == {
            g["IndexName"]: g["KeySchema"] for g in expected.get("GlobalSecondaryIndexes", [])
        }
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    s3 = client("s3", endpoint)
    bucket = settings[res.RAW_BUCKET.setting]
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4

    sqs = client("sqs", endpoint)
    dlq = sqs.get_queue_attributes(QueueUrl=settings[res.REPLAY_DLQ.setting], AttributeNames=["QueueArn"])
    queue = sqs.get_queue_attributes(QueueUrl=settings[res.REPLAY_QUEUE.setting], AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["Attributes"]["QueueArn"],
        "maxReceiveCount": res.MAX_RECEIVE_COUNT,
    }
    assert int(queue["VisibilityTimeout"]) == res.VISIBILITY_TIMEOUT


def test_a_second_run_reuses_everything_and_keeps_the_data(endpoint: str) -> None:
    code, first, _ = pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "inc-42")
    assert code == 0
    settings = exports(first)
    assert settings[res.EVENTS.setting] == "inc-42-events"
    ddb = client("dynamodb", endpoint)
    ddb.put_item(TableName=settings[res.EVENTS.setting], Item={"PK": {"S": "ENTITY#x"}, "SK": {"S": "TS#1"}})

    code, second, err = pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "inc-42")
    assert (code, err) == (0, "")
    assert exports(second) == settings
    assert second.count("# reused ") == 7 and "# created" not in second
    assert "created nothing" in second
    assert ddb.scan(TableName=settings[res.EVENTS.setting])["Count"] == 1
    assert len(ddb.list_tables()["TableNames"]) == 4
    assert len(client("sqs", endpoint).list_queues()["QueueUrls"]) == 2


def test_json_output(endpoint: str) -> None:
    code, out, _ = pik("aws", "init", "--endpoint-url", endpoint, "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data["settings"]) == list(res.SETTINGS)
    assert data["region"] == REGION and data["endpoint_url"] == endpoint
    assert [(r["kind"], r["created"]) for r in data["resources"]] == [
        ("bucket", True),
        *[("table", True)] * 4,
        ("queue", True),
        ("queue", True),
    ]
    assert json.loads(pik("aws", "init", "--endpoint-url", endpoint, "--json")[1])["resources"][0] == {
        "kind": "bucket",
        "name": "pik-raw",
        "setting": "RAW_BUCKET",
        "created": False,
        "notes": [],
    }


def test_the_printed_settings_point_the_kit_at_the_resources(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, _ = pik("aws", "init", "--endpoint-url", endpoint)
    assert code == 0
    for name, value in exports(out).items():
        monkeypatch.setenv(name, value)
    event = {
        "source": "demo",
        "event_type": "heartbeat",
        "entity_id": "user_123",
        "event_time": "2025-12-28T23:59:59Z",
        "payload": {"steps": 10},
    }
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(event) + "\n" + json.dumps(event) + "\n", encoding="utf-8")
    target = ["--backend", "aws", "--endpoint-url", endpoint, "--region", REGION]
    code, out, err = pik("ingest", str(lines), *target, "--json")
    assert (code, err) == (0, ""), err
    summary = json.loads(out)
    assert (summary["accepted"], summary["duplicate"]) == (1, 1)
    raw = client("s3", endpoint).list_objects_v2(Bucket="pik-raw")
    assert [o["Key"].split("/")[0] for o in raw["Contents"]] == ["raw"]


def test_without_credentials_placeholders_are_used_and_printed(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out, err = pik("aws", "init", "--endpoint-url", endpoint)
    assert (code, err) == (0, "")
    settings = exports(out)
    assert settings["AWS_ACCESS_KEY_ID"] == "testing" and settings["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert list(settings)[: len(res.SETTINGS)] == list(res.SETTINGS)


def test_an_unreachable_endpoint_is_one_line_and_exit_1(endpoint: str) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, _, err = pik("aws", "init", "--endpoint-url", closed)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pik aws: error: cannot reach {closed}")


def test_a_table_of_another_shape_is_refused_not_changed(endpoint: str) -> None:
    ddb = client("dynamodb", endpoint)
    ddb.create_table(
        TableName="pik-dedupe",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    code, _, err = pik("aws", "init", "--endpoint-url", endpoint)
    assert code == 1
    assert err.count("\n") == 1
    assert "table pik-dedupe" in err and "choose another --prefix" in err
    key = ddb.describe_table(TableName="pik-dedupe")["Table"]["KeySchema"]
    assert key == [{"AttributeName": "id", "KeyType": "HASH"}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs --endpoint-url"),
        (["--endpoint-url", "127.0.0.1:5000"], "is not an http:// or https:// URL"),
        (["--prefix", "Bad_Prefix"], "cannot name a bucket"),
        (["--stack", "pik"], "--stack reads a deployed stack"),
    ],
)
def test_usage_errors_exit_2_before_any_call(endpoint: str, argv: list[str], message: str) -> None:
    if "--prefix" in argv or "--stack" in argv:
        argv = ["--endpoint-url", endpoint, *argv]
    code, out, err = pik("aws", "init", *argv)
    assert code == 2 and out == ""
    assert err.startswith("pik aws: error: ") and message in err
    assert client("dynamodb", endpoint).list_tables()["TableNames"] == []


def test_init_records_the_shard_counts_and_marks_the_aggregates_window_heads(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTITY_SHARDS", "4")
    code, out, err = pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "heads")
    assert (code, err) == (0, "")
    settings = exports(out)
    assert (settings["LAG_SHARDS"], settings["ENTITY_SHARDS"], settings["REJECTION_SHARDS"]) == (
        "1",
        "4",
        "1",
    )
    ddb = client("dynamodb", endpoint)
    stack = ddb.get_item(
        TableName=settings[res.EVENTS.setting], Key={"PK": {"S": "STACK"}, "SK": {"S": "ENTITY_SHARDS"}}
    )
    assert stack["Item"]["shards"] == {"N": "4"}
    agg = settings[res.AGGREGATES.setting]
    record = {"PK": {"S": "STACK"}, "SK": {"S": "WINDOW_HEADS"}}
    assert ddb.get_item(TableName=agg, Key=record).get("Item")  # a new table keeps heads from the start
    # An aggregates table with versions and no record (written before heads): the next init backfills.
    ddb.delete_item(TableName=agg, Key=record)
    ddb.put_item(
        TableName=agg, Item={"PK": {"S": "ENTITY#a#b"}, "SK": {"S": "DAY#2025-12-28#VER#1766900000"}}
    )
    assert pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "heads")[0] == 0
    assert ddb.get_item(TableName=agg, Key=record).get("Item")
    head = ddb.get_item(TableName=agg, Key={"PK": {"S": "ENTITY#a#b"}, "SK": {"S": "DAY#2025-12-28#HEAD"}})
    assert head["Item"]["entity_id"] == {"S": "a#b"}
