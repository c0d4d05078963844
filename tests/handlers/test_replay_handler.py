"""The replay Lambda handler on real API Gateway event shapes, over a local workspace filled through the
ingest service: what the caller is answered, what is sent and audited, what is logged, which metrics."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.handlers import common
from backend.handlers import replay as replay_handler
from backend.handlers.replay import caller_identity
from backend.kit import Kit
from tests.conftest import Flaky, make_event
from tests.handlers.support import SEED_REPLAY_BODY, Workspace, captured_logs, replay_v1, replay_v2
from tests.handlers.test_ingest_handler import FakeLambdaContext, emf_documents, metric_names

ALICE = "arn:aws:iam::123456789012:user/alice"


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext(
        function_name="pik-replay",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:pik-replay",
    )


def call(event: dict, context: Any) -> tuple[int, dict[str, Any]]:
    response = replay_handler.handler(event, context)
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["isBase64Encoded"] is False
    return response["statusCode"], json.loads(response["body"])


def body(**fields: Any) -> str:
    base: dict[str, Any] = {
        "entity_id": "user_1",
        "start_time": "2025-12-28T00:00:00Z",
        "end_time": "2025-12-29T00:00:00Z",
    }
    return json.dumps({**base, **fields})


# -- the seed's request ---------------------------------------------------------------------------------


def test_the_seed_request_sends_and_answers_entity_id_scanned_sent(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    seed = make_event()  # user_123 at 2025-12-28T23:59:59Z, the seed's event
    ws.ingest([seed])
    ws.ingest([seed])  # and a duplicate receipt of it
    status, reply = call(replay_v1(SEED_REPLAY_BODY), context)
    assert status == 200
    assert (reply["entity_id"], reply["scanned"], reply["sent"]) == ("user_123", 2, 1)
    assert reply["outcome"] == "SENT" and reply["dry_run"] is False and reply["failed"] == 0
    assert reply["skipped"]["duplicate"] == 1 and reply["would_send"] == 1
    assert reply["request"]["limit"] == 50 and reply["request"]["include_duplicates"] is False
    [sent] = ws.queued()
    assert sent["entity_id"] == "user_123" and sent["replay_id"] == reply["replay_id"]
    assert set(sent) == {"event_id", "entity_id", "event_time", "s3_bucket", "s3_key", "replay_id"}
    audit = ws.ports.audit.get(reply["replay_id"])
    assert audit is not None and (audit.outcome.value, audit.sent, audit.actor) == ("SENT", 1, "api")


def test_an_http_api_v2_event_sends_too(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(3)
    status, reply = call(replay_v2(body()), context)
    assert (status, reply["scanned"], reply["sent"]) == (200, 3, 3)
    assert len(ws.queued()) == 3


def test_a_source_and_type_scope_over_days(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(2, "user_1")
    ws.add(3, "user_2")
    request = json.dumps(
        {"source": "demo", "event_type": "heartbeat", "start_day": "2025-12-28", "end_day": "2025-12-29"}
    )
    status, reply = call(replay_v1(request), context)
    assert (status, reply["entity_id"], reply["scanned"], reply["sent"]) == (200, None, 5, 5)
    assert reply["entities"] == 2 and reply["windows"] == 2


# -- dry runs -------------------------------------------------------------------------------------------


def test_dry_run_env_answers_the_plan_and_sends_nothing(
    ws: Workspace, context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.add(12)
    monkeypatch.setenv("DRY_RUN", "true")
    common.configure(ws.backend)  # the settings from the environment, as in Lambda
    status, reply = call(replay_v1(body(limit=10)), context)
    assert status == 200 and reply["dry_run"] is True
    assert (reply["entity_id"], reply["scanned"], reply["sent"]) == ("user_1", 12, 0)
    assert reply["would_send"] == 10 and reply["skipped"]["over_limit"] == 2
    assert reply["by_day"] == {"2025-12-28": 10} and reply["windows"] == 1
    assert len(reply["sample"]) == 10 and all(m["replay_id"] == reply["replay_id"] for m in reply["sample"])
    assert any("beyond the limit" in line for line in reply["why"]) and len(reply["fingerprint"]) == 64
    assert ws.queued() == []
    audit = ws.ports.audit.get(reply["replay_id"])
    assert audit is not None and audit.outcome.value == "DRY_RUN" and audit.dry_run

    # DRY_RUN wins over a request that asks for a real replay.
    status, reply = call(replay_v1(body(dry_run=False)), context)
    assert (status, reply["dry_run"], reply["sent"]) == (200, True, 0)
    assert ws.queued() == []


def test_the_request_can_ask_for_a_dry_run(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(3)
    status, reply = call(replay_v1(body(dry_run=True)), context)
    assert (status, reply["dry_run"], reply["would_send"], reply["sent"]) == (200, True, 3, 0)
    assert ws.queued() == []


def test_sent_zero_is_a_signal_with_a_reason(ws: Workspace, context: FakeLambdaContext) -> None:
    status, reply = call(replay_v1(body(entity_id="nobody")), context)
    assert (status, reply["scanned"], reply["sent"], reply["outcome"]) == (200, 0, 0, "SENT")
    status, plan = call(replay_v1(body(entity_id="nobody", dry_run=True)), context)
    assert any("nothing is indexed for entity 'nobody'" in line for line in plan["why"])


# -- the size guard and the previewed plan -------------------------------------------------------------


def test_above_the_size_guard_nothing_is_sent_without_force(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.settings_toml("[replay]\nconfirm_above = 2\n")
    ws.add(3)
    status, reply = call(replay_v1(body()), context)
    assert status == 409 and reply["status"] == 409 and reply["request_id"] == "rq-1"
    assert "size guard of 2" in reply["error"] and "force" in reply["error"]
    assert (reply["sent"], reply["would_send"], reply["needs_force"], reply["dry_run"]) == (0, 3, True, False)
    assert ws.queued() == []
    [refused] = ws.ports.audit.query().items
    assert refused.outcome.value == "REFUSED"

    status, reply = call(replay_v1(body(force=True)), context)
    assert (status, reply["sent"], reply["forced"]) == (200, 3, True)
    assert len(ws.queued()) == 3


def test_an_expected_fingerprint_sends_only_the_previewed_plan(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.add(2)
    _, plan = call(replay_v1(body(dry_run=True)), context)
    ws.add(1, start=10)  # arrives after the preview
    status, reply = call(replay_v1(body(expected_fingerprint=plan["fingerprint"])), context)
    assert status == 409 and "changed since its preview" in reply["error"] and ws.queued() == []
    _, plan = call(replay_v1(body(dry_run=True)), context)
    status, reply = call(replay_v1(body(expected_fingerprint=plan["fingerprint"][:12])), context)
    assert (status, reply["sent"]) == (200, 3)


# -- bad requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (None, "choose a scope"),
        (body(entity="user_1"), "entity: Extra inputs are not permitted"),  # a misspelt field
        (body(limit=0), "limit"),
        (body(start_time="2025-12-29T00:00:00Z"), "start_time must be before end_time"),
        (body(end_time="tomorrow"), "end_time"),
        (json.dumps({"entity_id": "user_1"}), "needs start_time and end_time"),
        (json.dumps({"source": "demo", "event_type": "heartbeat"}), "start_day and end_day"),
        (body(status="REJECTED"), "cannot be replayed"),
    ],
)
def test_a_bad_request_is_400_with_the_reason_and_nothing_happens(
    request_body: str | None, reason: str, ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.add(2)
    status, reply = call(replay_v1(request_body), context)
    assert status == 400 and reply["status"] == 400 and reason in reply["error"], reply
    assert reply["request_id"] == "rq-1"
    assert ws.queued() == [] and ws.ports.audit.query().items == []


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        ("[" * 10_000 + "]" * 10_000, "nested too deeply"),  # json.loads gave up: this was a 500
        ('{"entity_id": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested too deeply"),
        (
            '{"force": ' + "[" * 900 + "]" * 900 + "}",
            "force: must be true or false (a JSON boolean), got an array",
        ),
    ],
    ids=["document", "field", "printed-flag"],
)
def test_a_deeply_nested_request_is_400_not_a_500(
    request_body: str, reason: str, ws: Workspace, context: FakeLambdaContext
) -> None:
    status, reply = call(replay_v1(request_body), context)
    assert status == 400 and reason in reply["error"], reply
    assert ws.queued() == [] and ws.ports.audit.query().items == []


def test_an_event_that_is_not_from_api_gateway_is_a_json_400(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    status, reply = call({"entity_id": "user_1"}, context)
    assert status == 400 and "API Gateway" in reply["error"]
    status, reply = call(replay_v1("!!!", identity={}) | {"isBase64Encoded": True}, context)
    assert status == 400 and "base64" in reply["error"]


def test_a_base64_body_is_decoded(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(1)
    event = replay_v1(base64.b64encode(body().encode()).decode()) | {"isBase64Encoded": True}
    assert call(event, context)[1]["sent"] == 1


# -- read-only, store failures --------------------------------------------------------------------------


def test_read_only_refuses_to_send_with_403_but_previews(tmp_path: Path, context: FakeLambdaContext) -> None:
    filled = Workspace(tmp_path / "ws")
    filled.add(2)
    filled.close()
    ro = Workspace(tmp_path / "ws", read_only=True)
    try:
        status, reply = call(replay_v1(body()), context)
        assert status == 403 and reply["status"] == 403 and "read-only" in reply["error"]
        status, reply = call(replay_v1(body(dry_run=True)), context)
        assert (status, reply["would_send"], reply["sent"]) == (200, 2, 0)
        assert ro.ports.queue.depth().visible == 0 and ro.ports.audit.query().items == []
    finally:
        ro.close()
    # PIK_READ_ONLY on a writable workspace refuses the same way.
    rw = Workspace(tmp_path / "ws", read_only_setting=True)
    try:
        assert call(replay_v1(body()), context)[0] == 403
        assert rw.ports.queue.depth().visible == 0
    finally:
        rw.close()


def _with(ws: Workspace, **ports: Any) -> Kit:
    return dataclasses.replace(ws.backend, **ports)


# (The local plan checks raw keys inside the index's SQL: an execution reads no catalog port.)
@pytest.mark.parametrize("port", ["audit", "investigate"])
def test_a_store_failure_before_sending_is_503_and_nothing_is_sent(
    port: str, ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.add(3)
    flaky = Flaky(getattr(ws.ports, port))
    for method in ("select_replay",):
        flaky.fail(method)
    flaky.fail("begin", *["before"] * 4)  # an audit write is retried as a send is: 3 retries
    ws.configure(_with(ws, **{port: flaky}))
    status, reply = call(replay_v1(body()), context)
    assert status == 503 and reply["status"] == 503 and "store is unavailable" in reply["error"]
    assert "injected failure" not in reply["error"], "the store's own message stays in the log"
    assert "Traceback" not in json.dumps(reply) and "sent" not in reply
    assert ws.queued() == []
    # The same request again, once the store is back, sends: a retry is safe.
    status, reply = call(replay_v1(body()), context)
    assert (status, reply["sent"]) == (200, 3)


def test_a_queue_that_is_down_is_counted_as_failed_and_audited(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.add(3)
    flaky = Flaky(ws.ports.queue)
    flaky.fail("send_batch", "before", "before", "before", "before")  # the first try and 3 retries
    ws.configure(_with(ws, queue=flaky))
    status, reply = call(replay_v1(body()), context)
    assert (status, reply["outcome"], reply["sent"], reply["failed"]) == (200, "FAILED", 0, 3)
    assert "injected failure" in reply["error"]
    audit = ws.ports.audit.get(reply["replay_id"])
    assert audit is not None and (audit.outcome.value, audit.failed) == ("FAILED", 3)


def test_no_queue_is_503_and_says_what_is_missing(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(1)
    b = ws.backend
    ws.configure(dataclasses.replace(b, name="aws", location="test", queue=None, aggregates=None))
    status, reply = call(replay_v1(body()), context)
    assert status == 503 and "REPLAY_QUEUE_URL" in reply["error"]
    status, reply = call(replay_v1(body(dry_run=True)), context)  # a preview needs no queue
    assert (status, reply["would_send"]) == (200, 1)
    ws.configure(dataclasses.replace(b, name="aws", location="test", queue=None, audit=None, aggregates=None))
    status, reply = call(replay_v1(body(dry_run=True)), context)
    assert status == 503 and "no audit store" in reply["error"] and "AUDIT_TABLE" in reply["error"]


def test_an_unexpected_error_is_a_json_500_without_internals(
    ws: Workspace, context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(replay_handler, "api_reply", broken)
    status, reply = call(replay_v1(body()), context)
    assert status == 500 and "secret internals" not in json.dumps(reply)


# -- who ------------------------------------------------------------------------------------------------


def test_the_audit_names_the_iam_caller(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(1)
    identity = {"userArn": ALICE, "caller": "AIDAXMPLALICE", "user": "AIDAXMPLALICE", "accessKey": "AKIAXMPL"}
    _, reply = call(replay_v1(body(), identity=identity), context)
    assert reply["actor"] == ALICE
    role = "arn:aws:sts::123456789012:assumed-role/oncall/bob"
    _, reply = call(replay_v2(body(dry_run=True), authorizer={"iam": {"userArn": role}}), context)
    assert ws.ports.audit.get(reply["replay_id"]).actor == role  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("context_fields", "actor"),
    [
        ({}, "api"),
        ({"identity": {"userArn": None, "caller": "AROAXMPL:bob", "user": None}}, "AROAXMPL:bob"),
        ({"identity": {"userArn": "  "}, "authorizer": {"principalId": "svc-1"}}, "svc-1"),
        ({"authorizer": {"iam": {"callerId": "AIDAXMPL"}}}, "AIDAXMPL"),
        ({"authorizer": {"jwt": {"claims": {"sub": "abc-123"}, "scopes": None}}}, "abc-123"),
        ({"identity": {"userArn": "evil\x1b[2J"}}, "api"),  # not printable: not an actor
        ({"identity": "nonsense", "authorizer": ["x"]}, "api"),
    ],
)
def test_caller_identity(context_fields: dict[str, Any], actor: str) -> None:
    assert caller_identity({"requestContext": context_fields}) == actor


def test_caller_identity_of_anything_else_is_api() -> None:
    assert caller_identity(None) == caller_identity({"requestContext": None}) == "api"
    assert caller_identity({"requestContext": {"identity": {"userArn": "x" * 1000}}}) == "x" * 256


# -- logs and metrics -----------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    with captured_logs(replay_handler.logger) as buffer:
        yield buffer


def test_logs_name_the_replay_and_never_a_payload(
    ws: Workspace, context: FakeLambdaContext, log_lines: io.StringIO
) -> None:
    secret = "4111-1111-1111-1111"
    ws.add(2, payload={"card": secret})
    call(replay_v1(body(), identity={"userArn": ALICE}), context)
    call(replay_v1("{nope", request_id="rq-bad"), context)
    text = log_lines.getvalue()
    assert secret not in text
    sent, bad = [json.loads(line) for line in text.splitlines()]
    assert (sent["message"], sent["http_status"], sent["sent"], sent["actor"]) == ("replay", 200, 2, ALICE)
    assert sent["replay_id"].startswith("rp-") and sent["outcome"] == "SENT" and sent["level"] == "INFO"
    assert sent["correlation_id"] == "rq-1" and sent["function_name"] == "pik-replay"
    assert (bad["http_status"], bad["level"], bad["correlation_id"]) == (400, "WARNING", "rq-bad")
    assert "not JSON" in bad["error"]


def test_emf_metrics_keep_the_original_names(
    ws: Workspace, context: FakeLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.add(4)
    call(replay_v1(body()), context)
    call(replay_v1(body(dry_run=True)), context)
    call(replay_v1("{nope"), context)
    docs = emf_documents(capsys.readouterr().out)
    assert len(docs) == 3
    sent, dry, bad = docs
    for doc in docs:
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "PipelineInvestigationKit"
        assert (
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Function"]]
            and doc["Function"] == "replay"
        )
        assert doc["ReplayRequestedCount"] == [1.0]
    assert {"ReplayRequestedCount", "ReplayMessageCount"} <= metric_names(sent)
    assert sent["ReplayMessageCount"] == [4.0] and "DryRunCount" not in sent
    assert dry["ReplayMessageCount"] == [0.0] and dry["DryRunCount"] == [1.0]
    assert bad["ReplayErrorCount"] == [1.0]


# -- on AWS (moto, in-process) --------------------------------------------------------------------------


def test_on_aws_the_seed_replay_is_sent_to_sqs_and_audited_with_the_caller(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    from backend.services.ingest import IngestService, Received
    from tests.aws_env import moto_backend
    from tests.handlers.support import lambda_environment, missing_aws_ports

    store, settings, close = moto_backend()
    opened: Kit | None = None
    try:
        missing = missing_aws_ports(store, settings, "investigate", "catalog", "queue", "audit")
        if missing:
            pytest.skip(
                f"aws_ports() hands out no {', '.join(missing)} port yet (backend/adapters/aws/ports.py)"
            )
        seed = make_event()
        IngestService(store, store).ingest_batch([Received(seed), Received(make_event(entity_id="user_9"))])
        IngestService(store, store).ingest_batch([Received(seed)])  # a duplicate receipt
        lambda_environment(monkeypatch, settings)  # opened from the environment, as in Lambda

        status, plan = call(replay_v1(json.dumps({**json.loads(SEED_REPLAY_BODY), "dry_run": True})), context)
        assert (status, plan["scanned"], plan["would_send"], plan["sent"]) == (200, 2, 1, 0)
        identity = {"userArn": ALICE, "caller": "AIDAXMPLALICE"}
        status, reply = call(replay_v1(SEED_REPLAY_BODY, identity=identity), context)
        opened = common.get_kit()
        assert opened.name == "aws"

        assert (status, reply["entity_id"], reply["scanned"], reply["sent"]) == (200, "user_123", 2, 1)
        assert (reply["outcome"], reply["actor"], reply["skipped"]["duplicate"]) == ("SENT", ALICE, 1)
        sqs = store.clients.sqs
        got = sqs.receive_message(
            QueueUrl=settings.replay_queue_url or "", MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        [msg] = [json.loads(m["Body"]) for m in got.get("Messages", [])]
        assert (msg["entity_id"], msg["replay_id"], msg["s3_bucket"]) == (
            "user_123",
            reply["replay_id"],
            settings.raw_bucket,
        )
        audit = opened.audit.get(reply["replay_id"])
        assert audit is not None and (audit.outcome.value, audit.sent, audit.actor) == ("SENT", 1, ALICE)
        dry = opened.audit.get(plan["replay_id"])
        assert dry is not None and dry.outcome.value == "DRY_RUN" and dry.actor == "api"
    finally:
        common.configure(None)
        if opened is not None:
            opened.close()
        close()
