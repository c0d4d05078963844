"""The processor Lambda handler on SQS events as the event source mapping delivers them, over a local
workspace filled through the ingest service: the partial batch response, the versions written, one
recompute per window and batch, dry run, read-only, logs and metrics."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.handlers import common
from backend.handlers import processor as processor_handler
from backend.kit import Kit
from tests.conftest import Flaky
from tests.handlers.support import (
    SEED_REPLAY_BODY,
    Workspace,
    captured_logs,
    message,
    replay_v1,
    sqs_event,
    sqs_record,
)
from tests.handlers.test_ingest_handler import FakeLambdaContext, emf_documents

T0 = "2025-12-28T00:00:00.000Z"


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext(
        function_name="pik-processor",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:pik-processor",
    )


def failures(response: dict[str, Any]) -> list[str]:
    assert set(response) == {"batchItemFailures"}
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def versions(ws: Workspace, entity: str, day: str = "2025-12-28") -> list[tuple[str, int, Any]]:
    page = ws.ports.aggregates.versions(entity, day)
    return sorted((v.metric, v.version, v.value) for v in page.items)


class Counting:
    """Counts the calls made to a port."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return call if callable(attr) else attr


def _with(ws: Workspace, **ports: Any) -> Kit:
    return dataclasses.replace(ws.backend, **ports)


# -- the partial batch response -------------------------------------------------------------------------


def test_a_batch_recomputes_each_window_once_and_fails_only_the_bad_records(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    ws.add(3, "user_1")
    ws.add(2, "user_2")
    scans = Counting(ws.ports.investigate)
    ws.configure(_with(ws, investigate=scans))
    good = [sqs_record(message("user_1", f"2025-12-28T00:0{i}:00Z", event_id=f"e{i}")) for i in range(3)]
    other = sqs_record(message("user_2", "2025-12-28T10:00:00Z"))
    not_json = sqs_record("{truncated", message_id="bad-json", receive_count=3)
    no_entity = sqs_record(json.dumps({"event_time": T0}), message_id="no-entity")
    bad_time = sqs_record(
        json.dumps({"entity_id": "user_1", "event_time": "yesterday"}), message_id="bad-time"
    )
    event = sqs_event([good[0], not_json, good[1], other, no_entity, good[2], bad_time])

    response = processor_handler.handler(event, context)

    assert failures(response) == ["bad-json", "no-entity", "bad-time"]  # in the batch's order
    assert versions(ws, "user_1") == [("daily_event_count", 1, 3)]
    assert versions(ws, "user_2") == [("daily_event_count", 1, 2)]
    # One recompute per (entity, day): user_1's three messages cost one count and one window read (in one
    # call where the index reads a window whole, else by pages of one scan).
    assert scans.calls in (
        {"day_counts_entity": 2, "window_inputs": 2},
        {"day_counts_entity": 2, "scan_entity": 2},
    )
    v = ws.ports.aggregates.latest("user_1", "2025-12-28", "daily_event_count")
    assert v is not None and v.replay_ids == ["rp-test"] and v.input_count == 3


def test_a_batch_of_only_malformed_messages_is_answered_not_raised(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    event = sqs_event([sqs_record("", message_id="m1"), sqs_record("[]", message_id="m2")])
    assert failures(processor_handler.handler(event, context)) == ["m1", "m2"]


def test_an_empty_batch_and_a_non_sqs_event(ws: Workspace, context: FakeLambdaContext) -> None:
    assert processor_handler.handler(sqs_event([]), context) == {"batchItemFailures": []}
    assert processor_handler.handler({"hello": "world"}, context) == {"batchItemFailures": []}


def test_a_redelivered_batch_writes_no_new_version(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(2)
    event = sqs_event([sqs_record(message("user_1", T0))])
    assert failures(processor_handler.handler(event, context)) == []
    assert failures(processor_handler.handler(event, context)) == []
    assert versions(ws, "user_1") == [("daily_event_count", 1, 2)]
    ws.add(1, start=30)  # a late arrival: the next message of the window writes version 2
    assert failures(processor_handler.handler(event, context)) == []
    assert versions(ws, "user_1") == [("daily_event_count", 1, 2), ("daily_event_count", 2, 3)]


def test_workspace_metrics_are_computed(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.settings_toml('[[metrics]]\nname = "i_total"\nkind = "sum"\nfield = "i"\n')
    ws.add(4)  # payloads i = 0..3
    processor_handler.handler(sqs_event([sqs_record(message("user_1", T0))]), context)
    assert versions(ws, "user_1") == [("daily_event_count", 1, 4), ("i_total", 1, 6)]


def test_a_window_that_fails_fails_its_messages_only(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.add(1, "user_1")
    ws.add(1, "user_2")
    flaky = Flaky(ws.ports.aggregates)
    flaky.fail("append")  # the first window's write fails
    ws.configure(_with(ws, aggregates=flaky))
    first, second = sqs_record(message("user_1", T0)), sqs_record(message("user_2", T0))
    response = processor_handler.handler(sqs_event([first, second]), context)
    assert failures(response) == [first["messageId"]]
    assert versions(ws, "user_1") == [] and versions(ws, "user_2") == [("daily_event_count", 1, 1)]
    # Retried, it goes through.
    assert failures(processor_handler.handler(sqs_event([first]), context)) == []
    assert versions(ws, "user_1") == [("daily_event_count", 1, 1)]


def test_stores_that_cannot_be_opened_fail_every_record(ws: Workspace, context: FakeLambdaContext) -> None:
    b = ws.backend
    # A stack without its aggregate table (and queue, audit): nothing can be recomputed.
    ws.configure(dataclasses.replace(b, name="aws", location="test", queue=None, audit=None, aggregates=None))
    records = [sqs_record(message("user_1", T0)), sqs_record(message("user_2", T0))]
    assert failures(processor_handler.handler(sqs_event(records), context)) == [
        r["messageId"] for r in records
    ]


def test_metrics_defined_wrong_fail_every_record(ws: Workspace, context: FakeLambdaContext) -> None:
    ws.settings_toml('[[metrics]]\nname = "broken"\nkind = "sum"\n')  # a sum needs a field
    record = sqs_record(message("user_1", T0))
    assert failures(processor_handler.handler(sqs_event([record]), context)) == [record["messageId"]]


# -- dry run and read-only ------------------------------------------------------------------------------


def test_dry_run_computes_and_reports_without_writing(
    ws: Workspace, context: FakeLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.add(2)
    ws.configure(dry_run=True)
    bad = sqs_record("nope", message_id="bad")
    response = processor_handler.handler(sqs_event([sqs_record(message("user_1", T0)), bad]), context)
    assert failures(response) == ["bad"]
    assert versions(ws, "user_1") == []
    [doc] = emf_documents(capsys.readouterr().out)
    assert (doc["DryRunCount"], doc["AggregateVersionCount"], doc["ProcessorErrorCount"]) == (
        [1.0],
        [1.0],
        [1.0],
    )


def test_read_only_returns_every_message_and_writes_nothing(
    tmp_path: Path, context: FakeLambdaContext
) -> None:
    filled = Workspace(tmp_path / "ws")
    filled.add(1)
    filled.close()
    ro = Workspace(tmp_path / "ws", read_only_setting=True)
    try:
        record = sqs_record(message("user_1", T0))
        assert failures(processor_handler.handler(sqs_event([record]), context)) == [record["messageId"]]
        assert versions(ro, "user_1") == []
    finally:
        ro.close()


# -- end to end: replay, the queue, the processor -------------------------------------------------------


def test_a_replay_is_processed_into_a_version_that_names_it(
    ws: Workspace, context: FakeLambdaContext
) -> None:
    from backend.handlers import replay as replay_handler
    from tests.conftest import make_event

    ws.ingest([make_event(), make_event(event_time="2025-12-28T08:00:00Z")])
    ws.ingest([make_event()])  # a duplicate receipt: never counted twice
    reply = json.loads(replay_handler.handler(replay_v1(SEED_REPLAY_BODY), context)["body"])
    assert (reply["scanned"], reply["sent"]) == (3, 2)
    received = ws.ports.queue.receive(10, 60)
    # What the event source mapping would deliver: the queue's messages as SQS records.
    records = [
        sqs_record(
            m.body, message_id=m.message_id, receipt_handle=m.receipt_handle, receive_count=m.receive_count
        )
        for m in received
    ]
    assert failures(processor_handler.handler(sqs_event(records), context)) == []
    latest = ws.ports.aggregates.latest("user_123", "2025-12-28", "daily_event_count")
    assert latest is not None and (latest.version, latest.value) == (1, 2)
    assert latest.replay_ids == [reply["replay_id"]]


# -- logs and metrics -----------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    with captured_logs(processor_handler.logger) as buffer:
        yield buffer


def test_logs_name_messages_and_windows_never_a_payload(
    ws: Workspace, context: FakeLambdaContext, log_lines: io.StringIO
) -> None:
    secret = "4111-1111-1111-1111"
    ws.add(1, payload={"card": secret})
    poison = json.dumps({"entity_id": "user_1", "event_time": "not a time", "card": secret})
    processor_handler.handler(
        sqs_event(
            [sqs_record(message("user_1", T0)), sqs_record(poison, message_id="poison", receive_count=4)]
        ),
        context,
    )
    text = log_lines.getvalue()
    assert secret not in text
    failed, summary = [json.loads(line) for line in text.splitlines()]
    assert (failed["level"], failed["message_id"], failed["receive_count"]) == ("WARNING", "poison", 4)
    assert failed["reason"].startswith("malformed message")
    assert summary["message"] == "processed" and summary["function_name"] == "pik-processor"
    assert (summary["received"], summary["failed"], summary["versions_written"]) == (2, 1, 1)
    assert summary["windows"] == ["user_1/2025-12-28"]


def test_emf_metrics_keep_the_original_names(
    ws: Workspace, context: FakeLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.add(1)
    good = sqs_record(message("user_1", T0))
    processor_handler.handler(sqs_event([good, sqs_record("x"), sqs_record("y")]), context)
    processor_handler.handler(sqs_event([good]), context)
    first, second = emf_documents(capsys.readouterr().out)
    for doc in (first, second):
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "PipelineInvestigationKit" and directive["Dimensions"] == [
            ["Function"]
        ]
        assert doc["Function"] == "processor"
    assert (first["ProcessorMessageCount"], first["ProcessorErrorCount"]) == ([3.0], [2.0])
    assert (first["AggregateVersionCount"], first["AggregateUnchangedCount"]) == ([1.0], [0.0])
    assert (second["ProcessorMessageCount"], second["ProcessorErrorCount"]) == ([1.0], [0.0])
    assert (second["AggregateVersionCount"], second["AggregateUnchangedCount"]) == ([0.0], [1.0])


# -- on AWS (moto, in-process) --------------------------------------------------------------------------


def test_on_aws_messages_received_from_sqs_become_versions(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    from backend.services.ingest import IngestService, Received
    from tests.aws_env import REGION, moto_backend
    from tests.conftest import make_event
    from tests.handlers.support import lambda_environment, missing_aws_ports, sqs_records_from

    store, settings, close = moto_backend()
    opened: Kit | None = None
    try:
        missing = missing_aws_ports(store, settings, "investigate", "catalog", "aggregates")
        if missing:
            pytest.skip(
                f"aws_ports() hands out no {', '.join(missing)} port yet (backend/adapters/aws/ports.py)"
            )
        events = [make_event(event_time=f"2025-12-28T0{i}:00:00Z") for i in range(3)]
        IngestService(store, store).ingest_batch([Received(e) for e in events])
        lambda_environment(monkeypatch, settings)
        sqs, url = store.clients.sqs, settings.replay_queue_url or ""
        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=message("user_123", f"2025-12-28T0{i}:00:00Z"))
        sqs.send_message(QueueUrl=url, MessageBody="{not json")
        received: list[dict[str, Any]] = []
        while len(received) < 4:
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
            ).get("Messages", [])
            assert got, "the queue gave back fewer messages than were sent"
            received += got
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        event = sqs_event(sqs_records_from(received, arn, REGION))
        assert all(r["attributes"]["ApproximateReceiveCount"] == "1" for r in event["Records"])

        response = processor_handler.handler(event, context)
        opened = common.get_kit()

        bad = [m["MessageId"] for m in received if m["Body"] == "{not json"]
        assert failures(response) == bad
        latest = opened.aggregates.latest("user_123", "2025-12-28", "daily_event_count")
        assert latest is not None and (latest.version, latest.value, latest.replay_ids) == (1, 3, ["rp-test"])
        # The same batch again (SQS delivers at least once): no new version.
        assert failures(processor_handler.handler(event, context)) == bad
        assert opened.aggregates.latest("user_123", "2025-12-28", "daily_event_count").version == 1
    finally:
        common.configure(None)
        if opened is not None:
            opened.close()
        close()
