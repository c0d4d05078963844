"""The ingest Lambda handler on real API Gateway event shapes (REST v1 and HTTP API v2), over a local
workspace: what a producer is answered, what is stored, what is logged, which metrics are emitted."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.handlers import common
from backend.handlers import ingest as ingest_handler
from backend.kit import Kit, open_local
from backend.model import MAX_BODY_BYTES
from backend.services.ingest import QUARANTINE_MAX_BYTES
from backend.settings import Settings
from tests.conftest import Flaky, make_event

SEED_BODY = (
    '{\n    "source":"demo",\n    "event_type":"heartbeat",\n    "entity_id":"user_123",\n'
    '    "event_time":"2025-12-28T23:59:59Z",\n    "payload":{"steps":10}\n  }'
)
SEED_EVENT_ID = "bd10f9014e165b6d52271772b19788bb4a54b0f28cac6990d0d91bf2c9d643c0"


# -- API Gateway events, as the AWS documentation shows them ---------------------------------------------


def rest_v1_event(
    body: str | None, *, base64_encoded: bool = False, request_id: str = "c6af9ac6-7b61"
) -> dict:
    """A REST API (payload format 1.0) proxy event for ``POST /ingest`` on stage ``prod``."""
    return {
        "resource": "/ingest",
        "path": "/ingest",
        "httpMethod": "POST",
        "headers": {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "User-Agent": "curl/8.5.0",
            "X-Amzn-Trace-Id": "Root=1-5e66d96f-7491f09xmpl79d18acf3d050",
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Port": "443",
            "X-Forwarded-Proto": "https",
        },
        "multiValueHeaders": {
            "Accept": ["*/*"],
            "Content-Type": ["application/json"],
            "Host": ["abcdef1234.execute-api.us-east-1.amazonaws.com"],
            "User-Agent": ["curl/8.5.0"],
            "X-Forwarded-For": ["203.0.113.7"],
        },
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "extendedRequestId": "IOAK0E6pIAMFlxw=",
            "httpMethod": "POST",
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoIdentityId": None,
                "sourceIp": "203.0.113.7",
                "user": None,
                "userAgent": "curl/8.5.0",
                "userArn": None,
            },
            "path": "/prod/ingest",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": "29/Dec/2025:00:00:01 +0000",
            "requestTimeEpoch": 1766966401000,
            "resourceId": "e1z2xmpl",
            "resourcePath": "/ingest",
            "stage": "prod",
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def http_v2_event(
    body: str | None, *, base64_encoded: bool = False, request_id: str = "JKJaXmPLvHcESHA="
) -> dict:
    """An HTTP API (payload format 2.0) proxy event for ``POST /ingest`` on the ``$default`` stage."""
    return {
        "version": "2.0",
        "routeKey": "POST /ingest",
        "rawPath": "/ingest",
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-length": str(len(body or "")),
            "content-type": "application/json",
            "host": "r3pmxmplak.execute-api.us-east-2.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e",
            "x-forwarded-for": "198.51.100.4",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "r3pmxmplak",
            "domainName": "r3pmxmplak.execute-api.us-east-2.amazonaws.com",
            "domainPrefix": "r3pmxmplak",
            "http": {
                "method": "POST",
                "path": "/ingest",
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.4",
                "userAgent": "curl/8.5.0",
            },
            "requestId": request_id,
            "routeKey": "POST /ingest",
            "stage": "$default",
            "time": "29/Dec/2025:00:00:01 +0000",
            "timeEpoch": 1766966401000,
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


@dataclass
class FakeLambdaContext:
    function_name: str = "pik-ingest"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:pik-ingest"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


def call(event: dict, context: Any) -> tuple[int, dict[str, Any]]:
    response = ingest_handler.handler(event, context)
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["isBase64Encoded"] is False
    return response["statusCode"], json.loads(response["body"])


# -- answers ---------------------------------------------------------------------------------------------


def test_rest_v1_event_is_accepted_with_the_seed_fields(backend: Kit, context: FakeLambdaContext) -> None:
    status, body = call(rest_v1_event(SEED_BODY), context)
    assert status == 200
    assert body["status"] == "ACCEPTED"
    assert body["event_id"] == SEED_EVENT_ID
    assert body["s3_key"].startswith("raw/source=demo/event_type=heartbeat/")
    assert isinstance(body["ingest_lag_ms"], int) and body["ingest_lag_ms"] > 0
    assert body["event_time"] == "2025-12-28T23:59:59.000Z"
    assert body["ingest_time"].endswith("Z") and body["clock_skew"] is False
    assert body["reason"] is None and body["rejection_id"] is None and body["dry_run"] is False
    # Durable before acknowledged: the exact bytes sent are stored, and the index knows the event.
    assert backend.raw.get(body["s3_key"]) == SEED_BODY.encode()
    accepted = backend.index.get_accepted(SEED_EVENT_ID)
    assert accepted is not None and accepted.origin == "api"


def test_the_same_request_again_is_a_duplicate_receipt(backend: Kit, context: FakeLambdaContext) -> None:
    first = call(rest_v1_event(SEED_BODY), context)
    again = call(http_v2_event(SEED_BODY), context)
    assert first[0] == again[0] == 200
    assert (first[1]["status"], again[1]["status"]) == ("ACCEPTED", "DUPLICATE")
    assert again[1]["event_id"] == first[1]["event_id"]
    assert [r.status.value for r in backend.index.receipts(SEED_EVENT_ID)] == ["ACCEPTED", "DUPLICATE"]


@pytest.mark.parametrize("shape", [rest_v1_event, http_v2_event])
def test_base64_bodies_are_decoded_to_the_exact_bytes(
    shape: Any, backend: Kit, context: FakeLambdaContext
) -> None:
    raw = make_event(entity_id="café ☕", payload={"note": "naïve"})
    status, body = call(shape(base64.b64encode(raw).decode(), base64_encoded=True), context)
    assert (status, body["status"]) == (200, "ACCEPTED")
    assert backend.raw.get(body["s3_key"]) == raw


def test_http_v2_event_on_a_named_stage(backend: Kit, context: FakeLambdaContext) -> None:
    event = http_v2_event(SEED_BODY)
    event["rawPath"] = "/prod/ingest"
    event["requestContext"]["stage"] = "prod"
    assert common.api_request(event).path == "/ingest"
    assert call(event, context)[1]["status"] == "ACCEPTED"


def test_invalid_json_is_rejected_and_quarantined(backend: Kit, context: FakeLambdaContext) -> None:
    bad = '{"source":"demo", "event_type": '
    status, body = call(rest_v1_event(bad), context)
    assert status == 400
    assert body["status"] == "REJECTED"
    assert body["reason"].startswith("invalid JSON")
    assert body["event_id"] is None and body["rejection_id"]
    page = backend.index.query_rejections()
    assert [(r.rejection_id, r.reason, r.data, r.origin) for r in page.items] == [
        (body["rejection_id"], body["reason"], bad.encode(), "api")
    ]


def test_bytes_that_are_not_utf8_are_quarantined_exactly(backend: Kit, context: FakeLambdaContext) -> None:
    raw = b'{"source":"demo\xff"}'
    status, body = call(http_v2_event(base64.b64encode(raw).decode(), base64_encoded=True), context)
    assert (status, body["status"]) == (400, "REJECTED")
    assert "not UTF-8" in body["reason"]
    rejection = backend.index.get_rejection(body["rejection_id"])
    assert rejection is not None and rejection.data == raw


def test_a_lone_surrogate_in_the_event_is_rejected_not_a_crash(
    backend: Kit, context: FakeLambdaContext
) -> None:
    event = json.loads(json.dumps(rest_v1_event(None)))
    event["body"] = json.loads('"{\\"x\\": \\"\\ud800\\"}"')  # what json.loads gives for a \ud800 escape
    status, body = call(event, context)
    assert (status, body["status"]) == (400, "REJECTED")


def test_a_body_over_the_limit_is_413_and_quarantined_bounded(
    backend: Kit, context: FakeLambdaContext
) -> None:
    big = make_event(payload={"blob": "x" * MAX_BODY_BYTES})
    status, body = call(rest_v1_event(big.decode()), context)
    assert status == 413
    assert body["status"] == "REJECTED"
    assert f"{len(big):,} bytes" in body["reason"] and "limit" in body["reason"]
    rejection = backend.index.get_rejection(body["rejection_id"])
    assert rejection is not None
    assert (rejection.size, rejection.truncated) == (len(big), True)
    assert rejection.sha256 == hashlib.sha256(big).hexdigest()
    assert rejection.data == big[:QUARANTINE_MAX_BYTES]


def test_a_body_at_the_limit_is_not_refused_for_its_size(backend: Kit, context: FakeLambdaContext) -> None:
    base = make_event(payload={"blob": ""})
    padded = base[:-1] + b" " * (MAX_BODY_BYTES - len(base)) + b"}"
    assert len(padded) == MAX_BODY_BYTES
    status, body = call(rest_v1_event(padded.decode()), context)
    assert (status, body["status"]) == (200, "ACCEPTED")


def test_an_event_that_is_not_from_api_gateway_is_a_json_400(
    backend: Kit, context: FakeLambdaContext
) -> None:
    status, body = call({"hello": "world"}, context)
    assert status == 400 and body["status"] == 400 and "API Gateway" in body["error"]
    status, body = call(rest_v1_event("!!!", base64_encoded=True), context)
    assert status == 400 and "base64" in body["error"]
    assert backend.index.stats().rejected == 0


# -- dry run, read-only, store failures ------------------------------------------------------------------


def test_dry_run_answers_without_writing(
    backend: Kit, context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    common.configure(backend)  # settings from the environment, as in Lambda
    before = backend.index.stats()
    status, body = call(rest_v1_event(SEED_BODY), context)
    assert (status, body["status"], body["dry_run"]) == (200, "ACCEPTED", True)
    assert body["event_id"] == SEED_EVENT_ID and body["s3_key"]
    status, body = call(rest_v1_event("{not json"), context)
    assert (status, body["status"], body["dry_run"]) == (400, "REJECTED", True)
    assert body["reason"].startswith("invalid JSON") and body["rejection_id"] is None
    assert backend.index.stats() == before
    assert backend.index.get_accepted(SEED_EVENT_ID) is None

    # With the event stored for real, a dry run says it would be a duplicate, and still writes nothing.
    monkeypatch.setenv("DRY_RUN", "false")
    common.configure(backend)
    assert call(rest_v1_event(SEED_BODY), context)[1]["status"] == "ACCEPTED"
    monkeypatch.setenv("DRY_RUN", "true")
    common.configure(backend)
    stored = backend.index.stats()
    assert call(rest_v1_event(SEED_BODY), context)[1]["status"] == "DUPLICATE"
    assert backend.index.stats() == stored


def test_read_only_refuses_with_403(tmp_path: Path, context: FakeLambdaContext) -> None:
    open_local(tmp_path / "ws").close()
    read_only = open_local(tmp_path / "ws", read_only=True)
    common.configure(read_only, Settings(backend="local"))
    try:
        status, body = call(rest_v1_event(SEED_BODY), context)
        assert status == 403 and body["status"] == 403 and "read-only" in body["error"]
        assert read_only.index.stats().accepted == 0
    finally:
        common.configure(None)
        read_only.close()


@pytest.mark.parametrize(
    ("method", "when"),
    [
        ("put_new", "after"),
        ("put_new", "before"),
        ("record", "before"),
        ("store_columns", "before"),
    ],
)
def test_a_store_failure_is_503_and_a_retry_is_accepted_once(
    method: str, when: str, backend: Kit, context: FakeLambdaContext
) -> None:
    """put_new and record: raw bytes and index as separate stores (as S3 and DynamoDB are);
    store_columns: one store taking both in one transaction (the local workspace; a failure after its
    commit is one after record's: the event is stored, and a retry is a duplicate receipt)."""
    if method == "store_columns":
        raw = index = Flaky(backend.raw)
        raw.fail(method, when)
    else:
        raw, index = Flaky(backend.raw), Flaky(backend.index)
        (raw if method == "put_new" else index).fail(method, when)
    common.configure(dataclasses.replace(backend, raw=raw, index=index), Settings(backend="local"))
    status, body = call(rest_v1_event(SEED_BODY), context)
    assert status == 503
    assert body["status"] == 503 and "nothing was acknowledged" in body["error"]
    assert "event_id" not in body and "Traceback" not in json.dumps(body)
    assert backend.index.get_accepted(SEED_EVENT_ID) is None

    status, body = call(rest_v1_event(SEED_BODY, request_id="retry-1"), context)
    assert (status, body["status"]) == (200, "ACCEPTED")
    assert [r.status.value for r in backend.index.receipts(SEED_EVENT_ID)] == ["ACCEPTED"]


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    backend: Kit, context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(backend.index, "record", broken)
    monkeypatch.setattr(backend.index, "store_columns", broken)
    status, body = call(rest_v1_event(SEED_BODY), context)
    assert status == 500 and body["status"] == 500
    assert "secret internals" not in json.dumps(body) and "Traceback" not in json.dumps(body)


# -- logs and metrics ------------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    from tests.handlers.support import captured_logs  # support imports this module's event builders

    with captured_logs(ingest_handler.logger) as buffer:
        yield buffer


def test_logs_are_json_lines_without_the_payload(
    backend: Kit, context: FakeLambdaContext, log_lines: io.StringIO
) -> None:
    secret = "4111-1111-1111-1111"
    good = make_event(payload={"card": secret})
    bad = make_event(event_time="yesterday", payload={"card": secret})
    call(rest_v1_event(good.decode(), request_id="req-good"), context)
    call(http_v2_event(bad.decode(), request_id="req-bad"), context)
    text = log_lines.getvalue()
    assert secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 2
    good_log, bad_log = records
    assert good_log["status"] == "ACCEPTED" and len(good_log["event_id"]) == 64
    assert isinstance(good_log["ingest_lag_ms"], int)
    assert good_log["correlation_id"] == "req-good"
    assert good_log["function_request_id"] == context.aws_request_id
    assert good_log["function_name"] == "pik-ingest" and good_log["level"] == "INFO"
    assert (
        bad_log["status"] == "REJECTED" and bad_log["rejection_id"] and bad_log["correlation_id"] == "req-bad"
    )


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    docs = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if "_aws" in doc:
                docs.append(doc)
    return docs


def metric_names(doc: dict[str, Any]) -> set[str]:
    directives = doc["_aws"]["CloudWatchMetrics"]
    return {m["Name"] for d in directives for m in d["Metrics"]}


def test_emf_metrics_keep_the_original_names(
    backend: Kit, context: FakeLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    call(rest_v1_event(SEED_BODY), context)
    call(rest_v1_event(SEED_BODY), context)
    call(rest_v1_event("nope"), context)
    docs = emf_documents(capsys.readouterr().out)
    assert len(docs) == 3
    accepted, duplicate, rejected = docs
    for doc in docs:
        assert {d["Namespace"] for d in doc["_aws"]["CloudWatchMetrics"]} == {"PipelineInvestigationKit"}
    assert {"IngestCount", "DuplicateCount", "IngestLagMs"} <= metric_names(accepted)
    assert (accepted["IngestCount"], accepted["DuplicateCount"]) == ([1.0], [0.0])
    assert (duplicate["IngestCount"], duplicate["DuplicateCount"]) == ([1.0], [1.0])
    assert accepted["IngestLagMs"][0] > 0
    assert (accepted["Function"], accepted["Source"], accepted["Type"]) == ("ingest", "demo", "heartbeat")
    assert accepted["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Function", "Source", "Type"]]
    assert "IngestCount" not in rejected and rejected["InvalidCount"] == [1.0]


def test_every_answer_emits_a_metric(
    backend: Kit, context: FakeLambdaContext, recwarn: pytest.WarningsRecorder
) -> None:
    # Powertools warns when an invocation emitted nothing; every path counts something.
    call({"not": "api gateway"}, context)
    call(rest_v1_event(SEED_BODY), context)
    flaky = Flaky(backend.raw)
    flaky.fail("put_new")
    common.configure(dataclasses.replace(backend, raw=flaky, index=flaky), Settings(backend="local"))
    call(rest_v1_event(make_event(entity_id="other").decode()), context)
    assert not [w for w in recwarn if "No application metrics" in str(w.message)]


def test_fixtures_are_not_mutated_by_the_handler(backend: Kit, context: FakeLambdaContext) -> None:
    event = rest_v1_event(SEED_BODY)
    snapshot = copy.deepcopy(event)
    call(event, context)
    assert event == snapshot


# -- on AWS (moto, in-process) --------------------------------------------------------------------------


def test_on_aws_the_handler_opens_the_resources_its_environment_names(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    pytest.importorskip("backend.adapters.aws.store", reason="the AWS adapter is not written yet")
    import boto3
    from moto import mock_aws

    from backend.adapters.aws.resources import RAW_BUCKET, TABLES

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "PIK_BACKEND", "DRY_RUN", "PIK_READ_ONLY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        s3.create_bucket(Bucket="pik-handler-raw")
        monkeypatch.setenv(RAW_BUCKET.setting, "pik-handler-raw")
        for spec in TABLES:
            ddb.create_table(**spec.create_table_kwargs(f"pik-handler-{spec.default_name}"))
            monkeypatch.setenv(spec.setting, f"pik-handler-{spec.default_name}")
        common.configure(None)  # as in Lambda: the backend is opened from the environment on first use
        opened: Kit | None = None
        try:
            first = call(rest_v1_event(SEED_BODY), context)
            opened = common.get_kit()
            again = call(http_v2_event(SEED_BODY), context)
            bad = call(rest_v1_event('{"source": '), context)
            assert common.get_kit() is opened  # reused across invocations
            assert opened.name == "aws"
            assert (first[0], first[1]["status"], first[1]["event_id"]) == (200, "ACCEPTED", SEED_EVENT_ID)
            assert (again[0], again[1]["status"]) == (200, "DUPLICATE")
            assert (bad[0], bad[1]["status"]) == (400, "REJECTED")
            stored = s3.get_object(Bucket="pik-handler-raw", Key=first[1]["s3_key"])["Body"].read()
            assert stored == SEED_BODY.encode()
            assert [r.status.value for r in opened.index.receipts(SEED_EVENT_ID)] == ["ACCEPTED", "DUPLICATE"]
            assert [r.rejection_id for r in opened.index.query_rejections().items] == [bad[1]["rejection_id"]]
        finally:
            common.configure(None)
            if opened is not None:
                opened.close()
