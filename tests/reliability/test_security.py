"""Security: untrusted text stays text, least privilege in the template, read-only enforced by the services,
a replay size guard the API cannot slip past, and logs without credentials or payloads.

* ``pik report`` (Markdown): hostile entity ids, actors and replay ids render as their literal text, and
  the report has exactly the structure of one written for plain data; random strings of Markdown and
  terminal syntax stay text in every place the report puts data (the console's side is
  ``tests/console/test_literal_snapshots.py``).
* ``backend/template.yaml``, what ``tests/aws/test_template.py`` does not check yet: nothing but the signed
  API (and the queue) invokes a function; every Allow is scoped to this stack's own resources (no exception
  is needed, and the list of them is empty); no role may delete or rewrite what the kit keeps, and each role
  writes only its own stores; the roles still allow every call the functions make (run on moto); the
  bucket's TLS, encryption and public-access settings one by one.
* Read-only: every public entry point of every service (found by introspection, so a new one cannot be
  forgotten) is called in read-only mode on both adapters and writes nothing; the ``pik`` commands and the
  three handlers refuse with a clear message.
* The replay size guard: through the Lambda handler, only a JSON ``true`` force sends an over-guard replay
  (not "true", 1, null, [], a nested or misspelt flag, nor a body naming ``force`` twice).
* Logs: the three handlers and the ``pik`` commands run in a child process with secrets in the payloads,
  the request headers and the AWS credentials; at ``LOG_LEVEL=INFO`` none of them is written anywhere.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import io
import json
import os
import random
import secrets
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from pydantic import BaseModel

import backend.ports as ports_module
import backend.services.drain as drain_module
import backend.services.gaps as gaps_module
import backend.services.ingest as ingest_module
import backend.services.ingest_validation as ingest_validation_module
import backend.services.lag as lag_module
import backend.services.processor as processor_module
import backend.services.replay as replay_module
import backend.services.report as report_module
import backend.services.scope as scope_module
import backend.services.versions as versions_module
from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.config import RuntimeSettings
from backend.errors import ReadOnlyError
from backend.handlers import common
from backend.handlers import ingest as ingest_handler
from backend.handlers import processor as processor_handler
from backend.handlers import replay as replay_handler
from backend.handlers.replay import api_reply
from backend.model import ReplayOutcome, ReplayRequest
from backend.runtime import open_local
from backend.services.drain import DrainService
from backend.services.gaps import GapService
from backend.services.ingest import IngestService, Received, prepare
from backend.services.lag import LagService
from backend.services.processor import ProcessorService
from backend.services.replay import ReplayService
from backend.services.report import ReportService
from backend.services.scope import describe_scope, normalize
from backend.services.versions import VersionService
from backend.times import FixedClock
from pik_console.aggregates_cmd import drain
from pik_console.cli import main
from pik_console.console.services import build_services
from pik_console.report import build_report, code, md
from pik_console.text import safe
from tests.conftest import Adapter, open_adapter
from tests.handlers.support import replay_v1, replay_v2, sqs_event, sqs_record
from tests.handlers.test_ingest_handler import FakeLambdaContext, rest_v1_event
from tests.reliability.conftest import soak

ROOT = Path(__file__).resolve().parents[2]
DAY = "2025-12-01"
T0 = datetime(2025, 12, 1, 12, tzinfo=UTC)
WINDOW = ("2025-12-01T00:00:00Z", "2025-12-02T00:00:00Z")


def event(entity: str, minute: int, day: str = DAY, **payload: Any) -> bytes:
    return json.dumps(
        {
            "source": "web",
            "event_type": "click",
            "entity_id": entity,
            "event_time": f"{day}T10:{minute:02d}:00Z",
            "payload": {"n": minute, **payload},
        },
        ensure_ascii=False,
    ).encode()


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


# == pik report: data is text, never Markdown structure ======================================================

# An entity id may hold anything but control characters (invariant 8).
HOSTILE_ENTITY = (
    "[x](https://evil.example) ![i](https://evil.example/p.png) <img src=x onerror=alert(1)> "
    "<https://evil.example> a|b `t` ``` # *b* _e_ &lt; ~~s~~ \u202eevil\u202c"
)
# An actor is whoever the API caller or the OS user says they are.
HOSTILE_ACTOR = (
    "<script>alert(1)</script> [ok](https://evil.example) |\n## forged\n- [x] Root cause documented"
)
# A replay id arrives in queue messages, which anyone allowed to send to the queue writes.
HOSTILE_REPLAY_ID = "rp-1`](https://evil.example) | <b>x</b> ``\x1b[2J\n## forged"
PLAIN = ("plain-entity", "alice", "rp-plain")

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# Token types that data must never produce.
STRUCTURE = {"link_open", "image", "html_inline", "html_block", "em_open", "s_open", "heading_open"}


def _report_workspace(path: Path, entity: str, actor: str, replay_id: str) -> str:
    """A window with a replay by ``actor`` that made version 1, a late event and a message of replay
    ``replay_id`` that made version 2; returns its report (at a fixed time)."""
    clock = FixedClock(T0)
    store = LocalStore(path, clock=clock)
    ports = local_ports(store, clock=clock)
    try:
        IngestService(store, store, clock).ingest_batch([Received(event(entity, m)) for m in range(3)])
        replay = ReplayService(
            ports.investigate, ports.catalog, ports.audit, ports.queue, ports.aggregates, clock=clock
        )
        replay.execute(ReplayRequest(entity_id=entity, start_time=WINDOW[0], end_time=WINDOW[1]), actor=actor)
        processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, clock=clock)

        def process() -> None:
            while got := ports.queue.receive(10, 60):
                assert not processor.process([m.body for m in got]).failed
                ports.queue.delete([m.receipt_handle for m in got])

        process()
        clock.advance(timedelta(days=1))
        IngestService(store, store, clock).ingest_batch([Received(event(entity, 30))])
        message = {
            "event_id": "e",
            "entity_id": entity,
            "event_time": f"{DAY}T10:30:00Z",
            "replay_id": replay_id,
        }
        assert ports.queue.send_batch([json.dumps(message)]) == []
        process()
    finally:
        store.close()
    backend = open_local(path, create=False, read_only=True)
    try:
        return build_report(build_services(backend), entity, DAY, now=T0 + timedelta(days=2))
    finally:
        backend.close()


def _shape(markdown: str) -> list[tuple[str, str, int]]:
    """The report's structure: every block and inline token but the text itself."""
    out = []
    for token in _MD.parse(markdown):
        out.append((token.type, token.tag, token.nesting))
        for child in token.children or []:
            if child.type not in ("text", "text_special"):
                out.append((child.type, child.tag, child.nesting))
    return out


def _rendered_text(markdown: str) -> str:
    """What a reader sees: the text and code of every inline token, one line per token."""
    return "\n".join(
        "".join(c.content for c in token.children or [] if c.type in ("text", "text_special", "code_inline"))
        for token in _MD.parse(markdown)
        if token.type == "inline"
    )


def test_report_renders_hostile_data_as_its_literal_text(tmp_path: Path, figures: Any) -> None:
    plain = _report_workspace(tmp_path / "plain", *PLAIN)
    hostile = _report_workspace(tmp_path / "hostile", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    # The hostile report has exactly the plain one's structure: no link, image, HTML, heading, list item,
    # emphasis or table cell came from the data...
    plain_shape, hostile_shape = _shape(plain), _shape(hostile)
    assert hostile_shape == plain_shape
    assert not {t for t, _, _ in hostile_shape} & STRUCTURE - {t for t, _, _ in plain_shape}
    # ...and every hostile value reads as itself (control characters as escapes).
    text = _rendered_text(hostile)
    request = normalize(ReplayRequest(entity_id=HOSTILE_ENTITY, start_time=WINDOW[0], end_time=WINDOW[1]))
    for value in (HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID, describe_scope(request)):
        assert safe(value) in text, value
    for raw in ("\x1b", "\n## forged", "\u202e"):
        assert raw not in hostile
    figures(
        "pik report renders hostile data literally",
        hostile_values=4,
        tokens_compared=len(plain_shape),
        structure_from_data=0,
    )


# Pieces that mean something to Markdown, to the terminal, or to neither (random strings are drawn from them).
PIECES = [*"\\`*_[]()<>!|~&#-+=.:/ ", "\u3000", "\u00a0", "a", "b", "1", "é", "\n", "\t", "\x1b",
          "\u202e", "http://e.x", "www.e.x", "&lt;", "&#32;", "<img", "](", "![", "```", "---", "===", "1.",
          "    "]  # fmt: skip


def _in_every_context(value: str) -> str:
    """A document with ``value`` wherever the report puts data: a heading's code span, mid-sentence, a list
    item, the start of a line, a table's text cell and code cell."""
    return (
        f"# Report {code(value)} end\n\nText {md(value)} end.\n\n"
        f"- item {md(value)} end\n- {code(value)} end\n\n{md(value)} starts a line\n\n"
        f"| a | b | c |\n|---|---|---:|\n| {md(value)} | {code(value, cell=True)} | 1 |\n"
    )


def test_random_text_never_becomes_markdown_structure(figures: Any) -> None:
    rng = random.Random(6)
    plain = _shape(_in_every_context("plain"))
    cases = soak(1500, 20_000)
    for _ in range(cases):
        value = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        document = _in_every_context(value)
        assert _shape(document) == plain, value
        shown = safe(value)
        expected = [f"Report {shown} end", f"Text {shown} end.", f"item {shown} end", f"{shown} end",
                    f"{shown} starts a line", "a", "b", "c", shown, shown, "1"]  # fmt: skip
        assert _rendered_text(document).split("\n") == expected, value
    figures("report Markdown escaping (random text)", cases=cases, contexts=6, structure_from_data=0)


def test_pik_report_and_the_version_commands_print_no_raw_escape(tmp_path: Path) -> None:
    _report_workspace(tmp_path / "ws", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    ws = ["--workspace", str(tmp_path / "ws")]
    scope = ["--entity", HOSTILE_ENTITY, "--day", DAY]
    for argv in (["report", *scope], ["aggregates", *scope], ["diff", *scope], ["replays"]):
        code, out, err = cli(*argv, *ws)
        assert code == 0, err
        assert "\x1b" not in out and "\u202e" not in out, argv
        assert "\\x1b[2J" in out or argv == ["replays"], argv


# == the template: what test_template.py does not check yet ==================================================


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    from tests.aws.test_template import load_template

    return load_template()


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    from tests.aws.test_template import translate

    return translate(sam)


def _of_type(template: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"].startswith(prefix)}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allows(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, statement) for every Allow statement of every role's inline policies."""
    for name, role in _of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if statement["Effect"] == "Allow":
                    yield name, statement


# The service of an action, and the resource types it may be granted on.
SERVICE_RESOURCES = {
    "s3": "AWS::S3::Bucket",
    "dynamodb": "AWS::DynamoDB::Table",
    "sqs": "AWS::SQS::Queue",
    "logs": "AWS::Logs::LogGroup",
}
# Allows that cannot be scoped to a resource (the actions that take only "*", such as
# cloudwatch:PutMetricData or xray:PutTraceSegments). The kit needs none: metrics are EMF log lines and
# there is no tracing. A new one must be added here, with its reason, for the test below to pass.
UNSCOPED_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _resource_target(resource: Any) -> tuple[str, str | None]:
    """(logical id, path below its ARN or None) of a resource written as ``!GetAtt X.Arn`` or
    ``!Sub "${X.Arn}/path"``; AssertionError for anything else (a literal ARN, a wildcard, another
    stack's)."""
    if isinstance(resource, dict) and list(resource) == ["Fn::GetAtt"]:
        logical, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn", resource
        return logical, None
    if isinstance(resource, dict) and list(resource) == ["Fn::Sub"] and isinstance(resource["Fn::Sub"], str):
        text = resource["Fn::Sub"]
        assert text.startswith("${") and ".Arn}/" in text, resource
        logical, path = text[2:].split(".Arn}/", 1)
        assert "${" not in path, resource
        return logical, path
    raise AssertionError(f"not a reference to one of this stack's resources: {resource!r}")


def test_every_allow_is_scoped_to_this_stacks_own_resources(sam: dict[str, Any], figures: Any) -> None:
    resources = sam["Resources"]
    checked = 0
    for role, statement in _allows(sam):
        if statement.get("Principal") is not None:
            continue  # a trust policy
        actions = _as_list(statement["Action"])
        services = {a.split(":", 1)[0] for a in actions}
        assert len(services) == 1, f"{role}/{statement.get('Sid')}: one service per statement"
        (service,) = services
        for action in actions:
            assert "*" not in action, f"{role}: wildcard action {action}"
            if (role, action) in UNSCOPED_EXCEPTIONS:
                continue
        for resource in _as_list(statement["Resource"]):
            assert resource != "*", f"{role}/{statement.get('Sid')}: unscoped and not a listed exception"
            logical, path = _resource_target(resource)
            assert resources[logical]["Type"] == SERVICE_RESOURCES[service], (role, statement["Sid"], logical)
            if path is not None:
                # A key prefix or the table's indexes, never every object of the bucket ("<arn>/*").
                prefix = path.removesuffix("*")
                assert prefix.endswith("/") and prefix.strip("/"), (role, statement["Sid"], path)
                assert "*" not in prefix, (role, statement["Sid"], path)
            checked += 1
    assert UNSCOPED_EXCEPTIONS == {}, "document why each exception cannot be scoped"
    assert checked >= 20
    figures("template: every Allow scoped to this stack", resources_checked=checked, unscoped_exceptions=0)


# Actions that would delete, overwrite in place or open up what the kit keeps (raw bytes, receipts, versions,
# the audit trail, the queues) or change its infrastructure: no role may hold any of them.
FORBIDDEN_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectAcl",
    "s3:PutBucket",
    "s3:DeleteBucket",
    "s3:PutLifecycleConfiguration",
    "dynamodb:DeleteItem",
    "dynamodb:UpdateItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQL",
    "dynamodb:DeleteTable",
    "dynamodb:UpdateTable",
    "dynamodb:UpdateTimeToLive",
    "sqs:PurgeQueue",
    "sqs:DeleteQueue",
    "sqs:SetQueueAttributes",
    "sqs:AddPermission",
    "logs:DeleteLogGroup",
    "logs:PutRetentionPolicy",
    "iam:",
    "kms:",
    "sts:",
    "lambda:",
)
# What each role may write (action, logical resource, key prefix): its own stores and nothing else.
WRITES = {
    "IngestFunctionRole": {
        ("s3:PutObject", "RawBucket", "raw/*"),
        ("s3:PutObject", "RawBucket", "receipts/*"),
        ("dynamodb:PutItem", "EventsTable", None),
        ("dynamodb:PutItem", "EventsTable", "index/*"),
        ("dynamodb:PutItem", "DedupeTable", None),
    },
    "ReplayFunctionRole": {
        ("dynamodb:PutItem", "AuditTable", None),
        ("sqs:SendMessage", "ReplayQueue", None),
    },
    "ProcessorFunctionRole": {
        ("dynamodb:PutItem", "AggregatesTable", None),
        ("s3:PutObject", "RawBucket", "manifests/*"),
        ("sqs:DeleteMessage", "ReplayQueue", None),
        ("sqs:ChangeMessageVisibility", "ReplayQueue", None),
    },
}
READ_PREFIXES = ("Get", "Query", "Scan", "List", "Describe", "BatchGet", "ConditionCheck", "ReceiveMessage")


def test_no_role_may_delete_or_rewrite_and_each_writes_only_its_own_stores(
    sam: dict[str, Any], figures: Any
) -> None:
    writes: dict[str, set[tuple[str, str, str | None]]] = {role: set() for role in WRITES}
    for role, statement in _allows(sam):
        if statement.get("Principal") is not None:
            continue
        for action in _as_list(statement["Action"]):
            assert not action.startswith(FORBIDDEN_ACTIONS), f"{role} may {action}"
            if action.split(":", 1)[1].startswith(READ_PREFIXES) or action == "logs:CreateLogStream":
                continue
            if action == "logs:PutLogEvents":
                continue  # its own log group (scoped above)
            for resource in _as_list(statement["Resource"]):
                writes[role].add((action, *_resource_target(resource)))
    assert writes == WRITES
    figures(
        "template: no delete or rewrite, writes per role",
        forbidden_actions_checked=len(FORBIDDEN_ACTIONS),
        roles=len(WRITES),
        write_grants=sum(len(w) for w in WRITES.values()),
    )


def test_nothing_but_the_signed_api_and_the_queue_invokes_a_function(
    cfn: dict[str, Any], figures: Any
) -> None:
    assert not _of_type(cfn, "AWS::Lambda::Url"), "a function URL bypasses the API's SigV4"
    assert not _of_type(cfn, "AWS::ApiGatewayV2::"), "a second API"
    (api_id,) = _of_type(cfn, "AWS::ApiGateway::RestApi")
    api = cfn["Resources"][api_id]["Properties"]
    assert "Policy" not in api, "a resource policy on the API"
    permissions = _of_type(cfn, "AWS::Lambda::Permission")
    assert len(permissions) == 2  # POST /ingest, POST /replay
    for name, permission in permissions.items():
        props = permission["Properties"]
        assert props["Action"] == "lambda:InvokeFunction", name
        assert props["Principal"] == "apigateway.amazonaws.com", name
        # Only this API's stage and method may invoke it, not any API in any account.
        source = json.dumps(props["SourceArn"])
        assert "${__ApiId__}" in source or api_id in source, name
    mappings = _of_type(cfn, "AWS::Lambda::EventSourceMapping")
    assert [m["Properties"]["EventSourceArn"] for m in mappings.values()] == [
        {"Fn::GetAtt": ["ReplayQueue", "Arn"]}
    ]
    figures("template: only the signed API and the queue invoke functions", permissions=len(permissions))


# Each function's role, and the IAM action an API operation is authorized as (where it is not its own name).
ROLE_OF = {
    "ingest": "IngestFunctionRole",
    "replay": "ReplayFunctionRole",
    "processor": "ProcessorFunctionRole",
}
IAM_ACTION = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
TRANSACT_ITEM = {"Put": "PutItem", "ConditionCheck": "ConditionCheckItem", "Update": "UpdateItem",
                 "Delete": "DeleteItem", "Get": "GetItem"}  # fmt: skip


def _authorizations(
    service: str, operation: str, params: dict[str, Any], names: dict[str, str]
) -> Iterator[tuple[str, str, str | None]]:
    """(IAM action, logical resource, path below its ARN) that one API call needs."""
    if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
        for item in params["TransactItems"]:
            ((kind, spec),) = item.items()
            yield f"dynamodb:{TRANSACT_ITEM[kind]}", names[spec["TableName"]], None
    elif service == "dynamodb" and operation == "BatchGetItem":
        for table in params["RequestItems"]:
            yield "dynamodb:BatchGetItem", names[table], None
    elif service == "dynamodb":
        index = params.get("IndexName")
        yield f"dynamodb:{operation}", names[params["TableName"]], f"index/{index}" if index else None
    elif service == "s3":
        key = params.get("Key")
        yield IAM_ACTION.get((service, operation), f"s3:{operation}"), names[params["Bucket"]], key
    else:
        yield IAM_ACTION.get((service, operation), f"{service}:{operation}"), names[params["QueueUrl"]], None


def _granted(sam: dict[str, Any], role: str, action: str, logical: str, path: str | None) -> bool:
    for name, statement in _allows(sam):
        if name != role or action not in _as_list(statement["Action"]):
            continue
        for resource in _as_list(statement["Resource"]):
            target, pattern = _resource_target(resource)
            if target != logical:
                continue
            if pattern is None and path is None:
                return True
            if pattern is not None and path is not None and path.startswith(pattern.removesuffix("*")):
                return True
    return False


def test_the_roles_grant_every_call_the_functions_make(
    sam: dict[str, Any], monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    """The other side of least privilege: each function, run on moto through its handler, makes only calls
    its role allows (an over-tight role fails in production only, where IAM is enforced)."""
    import boto3
    from botocore.client import BaseClient

    from backend.adapters.aws.ports import aws_ports
    from tests.aws_env import moto_backend
    from tests.handlers.support import lambda_environment, sqs_records_from

    store, settings, close = moto_backend()
    calls: list[tuple[str, str, str, dict[str, Any]]] = []
    current = {"function": ""}
    original = BaseClient._make_api_call

    def recording(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if current["function"]:
            calls.append((current["function"], client.meta.service_model.service_name, operation, params))
        return original(client, operation, params)

    try:
        names = {
            settings.raw_bucket: "RawBucket",
            settings.events_table: "EventsTable",
            settings.dedupe_table: "DedupeTable",
            settings.agg_table: "AggregatesTable",
            settings.audit_table: "AuditTable",
            settings.replay_queue_url: "ReplayQueue",
            settings.replay_dlq_url: "ReplayDeadLetterQueue",
        }
        lambda_environment(monkeypatch, settings)
        monkeypatch.setattr(BaseClient, "_make_api_call", recording)
        context = FakeLambdaContext()
        current["function"] = "ingest"
        for body in [*(event("u1", m, note="x") for m in range(3)), event("u1", 0, note="x"), b"not json"]:
            assert ingest_handler.handler(rest_v1_event(body.decode()), context)["statusCode"] in (200, 400)
        # The same event id with other bytes: kept under a receipt key.
        other = json.loads(event("u1", 1, note="x"))
        other["extra"] = 1
        assert ingest_handler.handler(rest_v1_event(json.dumps(other)), context)["statusCode"] == 200
        current["function"] = "replay"
        body = json.dumps({"entity_id": "u1", "start_time": WINDOW[0], "end_time": WINDOW[1]})
        for request in (json.dumps({**json.loads(body), "dry_run": True}), body):
            assert replay_handler.handler(replay_v1(request), context)["statusCode"] == 200
        current["function"] = ""
        sqs = boto3.client("sqs", region_name=settings.region)
        got = sqs.receive_message(
            QueueUrl=settings.replay_queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )
        records = sqs_records_from(got["Messages"], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
        current["function"] = "processor"
        answer = processor_handler.handler(sqs_event(records), context)
        assert answer["batchItemFailures"] == []
        current["function"] = ""
        assert aws_ports(store, settings).aggregates.latest("u1", DAY, "daily_event_count") is not None
    finally:
        current["function"] = ""
        common.configure(None)
        close()
    needed = {
        (function, *auth)
        for function, service, operation, params in calls
        for auth in _authorizations(service, operation, params, names)
    }
    missing = sorted(n for n in needed if not _granted(sam, ROLE_OF[n[0]], *n[1:]))
    assert missing == [], f"calls the roles do not allow: {missing}"
    assert {n[0] for n in needed} == set(ROLE_OF)
    figures(
        "template: roles allow every call the functions make",
        api_calls=len(calls),
        grants_needed=len(needed),
        denied=len(missing),
    )


def _bucket(sam: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    props = sam["Resources"]["RawBucket"]["Properties"]
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in _of_type(sam, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": "RawBucket"}
    ]
    assert len(policies) == 1
    return props, policies[0]


def test_bucket_denies_every_request_without_tls_on_the_bucket_and_its_objects(sam: dict[str, Any]) -> None:
    _, statements = _bucket(sam)
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*" and _as_list(deny["Action"]) == ["s3:*"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert _as_list(deny["Resource"]) == [
        {"Fn::GetAtt": ["RawBucket", "Arn"]},
        {"Fn::Sub": "${RawBucket.Arn}/*"},
    ]
    # And the policy grants nothing to anyone: access is the roles' alone.
    assert [s for s in statements if s["Effect"] != "Deny"] == []


def test_bucket_and_queues_encrypt_by_default(sam: dict[str, Any]) -> None:
    props, _ = _bucket(sam)
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms", "aws:kms:dsse")
    for queue in _of_type(sam, "AWS::SQS::Queue").values():
        assert (
            queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"]
        )


def test_bucket_blocks_every_kind_of_public_access(sam: dict[str, Any], figures: Any) -> None:
    props, _ = _bucket(sam)
    block = props["PublicAccessBlockConfiguration"]
    settings = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    assert {k: block.get(k) for k in settings} == dict.fromkeys(settings, True)
    # ACLs are off altogether (the bucket owner owns every object) and no canned ACL opens the bucket.
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "AccessControl" not in props
    figures("template: bucket TLS-only, encrypted, private", public_access_settings=len(settings))


# == read-only: enforced in the services =====================================================================


@dataclasses.dataclass
class Stores:
    """The ports a service is built on; on the recording side, each wrapped in a :class:`Recorder`."""

    raw: Any
    index: Any
    investigate: Any
    catalog: Any
    queue: Any
    audit: Any
    aggregates: Any


# Port methods that change a store: receiving a message counts toward its dead-letter limit, so it writes.
WRITE_METHODS = {"put_new", "record", "quarantine", "send_batch", "receive", "delete", "release", "begin",
                 "finish", "append"}  # fmt: skip


def _protocol_methods() -> set[str]:
    names: set[str] = set()
    for _, cls in inspect.getmembers(ports_module, inspect.isclass):
        if getattr(cls, "_is_protocol", False) and cls.__module__ == ports_module.__name__:
            names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names


def test_every_port_method_is_known_to_read_or_write() -> None:
    """The recorder below tells writes by name; a new port method must be classified here first."""
    reads = {"get", "sha256", "get_accepted", "receipts", "query_entity", "query_partition",
             "query_rejections", "get_rejection", "stats", "scan_entity", "scan_partition",
             "day_counts_entity", "day_counts_partition", "missing", "get_many", "depth", "dead_letters",
             "query", "latest", "versions", "manifest", "windows_with_versions", "delivered"}  # fmt: skip
    assert _protocol_methods() == reads | WRITE_METHODS
    assert not reads & WRITE_METHODS


class Recorder:
    """A port whose write calls are recorded (and still made)."""

    def __init__(self, port: Any, name: str, log: list[str]) -> None:
        self._port, self._name, self._log = port, name, log

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._port, attr)
        if attr in WRITE_METHODS and callable(value):

            def recorded(*args: Any, **kwargs: Any) -> Any:
                self._log.append(f"{self._name}.{attr}")
                return value(*args, **kwargs)

            return recorded
        return value


def _seed(stores: Stores, clock: FixedClock) -> None:
    """Three events of u1 on DAY and two aggregate versions of the window (a late fourth event between
    them), then a replay of the four (four messages left on the queue, one audit record)."""
    IngestService(stores.raw, stores.index, clock).ingest_batch([Received(event("u1", m)) for m in range(3)])
    processor = ProcessorService(stores.investigate, stores.catalog, stores.aggregates, clock=clock)
    processor.recompute("u1", DAY)
    clock.advance(timedelta(hours=30))
    IngestService(stores.raw, stores.index, clock).ingest_batch([Received(event("u1", 40))])
    processor.recompute("u1", DAY)
    _replay(stores, clock).execute(
        ReplayRequest(entity_id="u1", start_time=WINDOW[0], end_time=WINDOW[1]), actor="seed", force=True
    )


def _replay(stores: Stores, clock: FixedClock, *, read_only: bool = False) -> ReplayService:
    return ReplayService(
        stores.investigate,
        stores.catalog,
        stores.audit,
        stores.queue,
        stores.aggregates,
        clock=clock,
        confirm_above=2,
        read_only=read_only,
    )


def _processor(
    stores: Stores, clock: FixedClock, *, read_only: bool, dry_run: bool = False
) -> ProcessorService:
    return ProcessorService(
        stores.investigate,
        stores.catalog,
        stores.aggregates,
        clock=clock,
        read_only=read_only,
        dry_run=dry_run,
    )


NEW = [event("u2", m) for m in range(2)] + [b"not json"]
U1_REQUEST = ReplayRequest(entity_id="u1", start_time=WINDOW[0], end_time=WINDOW[1])
MESSAGE = json.dumps(
    {"event_id": "e", "entity_id": "u3", "event_time": f"{DAY}T10:00:00Z", "replay_id": "rp-x"}
)

# How to call every public entry point of the services: (stores, clock, read_only) -> what it returns.
# A method of a service without a read_only switch must not write at all.
Recipe = Callable[[Stores, FixedClock, bool], Any]


def _ingest(ro: bool, stores: Stores, clock: FixedClock) -> IngestService:
    return IngestService(stores.raw, stores.index, clock, read_only=ro)


def _new() -> list[Received]:
    return [Received(b) for b in NEW]


class _NothingDelivered:
    """A ledger that has seen nothing (the AWS index has none), so resume_stream reaches its writes."""

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        return {}


RECIPES: dict[str, Recipe] = {
    "IngestService.ingest": lambda s, c, ro: _ingest(ro, s, c).ingest(NEW[0]),
    "IngestService.ingest_batch": lambda s, c, ro: _ingest(ro, s, c).ingest_batch(_new()),
    "IngestService.ingest_stream": lambda s, c, ro: list(_ingest(ro, s, c).ingest_stream(iter(_new()))),
    "IngestService.resume_stream": lambda s, c, ro: list(
        _ingest(ro, s, c).resume_stream(
            iter([Received(b, "file:x", n) for n, b in enumerate(NEW, 1)]), _NothingDelivered()
        )
    ),
    "IngestService.prepare_batch": lambda s, c, ro: _ingest(ro, s, c).prepare_batch(_new()),
    "IngestService.commit": lambda s, c, ro: (
        _ingest(ro, s, c).commit(_ingest(False, s, c).prepare_batch(_new()))
    ),
    "ReplayService.plan": lambda s, c, ro: _replay(s, c, read_only=ro).plan(U1_REQUEST, actor="t"),
    "ReplayService.execute": lambda s, c, ro: (
        _replay(s, c, read_only=ro).execute(U1_REQUEST, actor="t", force=True)
    ),
    "replay.api_reply": lambda s, c, ro: api_reply(
        _replay(s, c, read_only=ro), {**U1_REQUEST.model_dump(exclude_none=True), "force": True}, actor="t"
    ),
    "ProcessorService.process": lambda s, c, ro: _processor(s, c, read_only=ro).process([MESSAGE]),
    "ProcessorService.recompute": lambda s, c, ro: _processor(s, c, read_only=ro).recompute("u4", DAY),
    "DrainService.run": lambda s, c, ro: DrainService(s.queue, _processor(s, c, read_only=ro)).run(),
    "LagService.lag": lambda s, c, ro: LagService(s.index, s.investigate).lag("web", "click", DAY),
    "GapService.gaps": lambda s, c, ro: (
        GapService(s.index, s.investigate).gaps("2025-11-28", "2025-12-03", entity_id="u1")
    ),
    "VersionService.versions": lambda s, c, ro: (
        VersionService(s.aggregates, s.investigate, s.audit).versions("u1", DAY)
    ),
    "VersionService.diff": lambda s, c, ro: (
        VersionService(s.aggregates, s.investigate, s.audit).diff("u1", DAY, "daily_event_count")
    ),
    "ReportService.gather": lambda s, c, ro: (
        ReportService(s.index, s.investigate, s.audit, s.aggregates, catalog=s.catalog, queue=s.queue)
        .gather("u1", DAY)
    ),
}  # fmt: skip
# Writes in normal mode, writes nothing (and is allowed) in read-only mode: a dry run.
ALLOWED_IN_READ_ONLY = {"ReplayService.plan"}
# Entry points that answer a refusal rather than raise it: how the answer says so.
REFUSAL_ANSWERS: dict[str, Callable[[Any], bool]] = {"replay.api_reply": lambda answer: answer[0] == 403}


def _refused(name: str, recipe: Recipe, stores: Stores, clock: FixedClock) -> bool:
    """Call ``recipe`` in read-only mode: whether it was refused."""
    try:
        answer = recipe(stores, clock, True)
    except ReadOnlyError:
        return True
    return name in REFUSAL_ANSWERS and REFUSAL_ANSWERS[name](answer)


SERVICE_MODULES = (
    ingest_module,
    ingest_validation_module,
    lag_module,
    gaps_module,
    versions_module,
    processor_module,
    scope_module,
    replay_module,
    drain_module,
    report_module,
    replay_handler,  # api_reply, which answers a replay request with the service's outcome as an HTTP status
)


def _is_service(cls: type) -> bool:
    """A class that holds stores and acts on them: not a model, record, error, enum or protocol."""
    return not (
        issubclass(cls, BaseModel | Exception | enum.Enum)
        or dataclasses.is_dataclass(cls)
        or getattr(cls, "_is_protocol", False)
        or issubclass(cls, tuple)
    )


def _entry_points() -> set[str]:
    """Every public method of every service class, and every public function that takes a service or a
    store, in backend/services (and the replay handler, whose api_reply takes the replay service)."""
    classes = {
        cls
        for module in SERVICE_MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and _is_service(cls)
    }
    found = {
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, value in vars(cls).items()
        if not name.startswith("_") and callable(value)
    }
    stores = {
        cls
        for _, cls in inspect.getmembers(ports_module, inspect.isclass)
        if getattr(cls, "_is_protocol", False)
    }
    for module in SERVICE_MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            hints = typing.get_type_hints(fn)
            hints.pop("return", None)  # takes: a factory that returns a service is not an entry point
            if any(isinstance(h, type) and (h in classes or h in stores) for h in hints.values()):
                found.add(f"{module.__name__.rsplit('.', 1)[-1]}.{name}")
    return found


def _recorded(root: Path) -> tuple[Stores, FixedClock, list[str], Callable[[], None]]:
    clock = FixedClock(T0)
    store = LocalStore(root, clock=clock)
    local = local_ports(store, clock=clock)
    plain = Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates)
    _seed(plain, clock)
    log: list[str] = []
    recorded = Stores(
        **{f.name: Recorder(getattr(plain, f.name), f.name, log) for f in dataclasses.fields(Stores)}
    )
    return recorded, clock, log, store.close


def test_every_service_entry_point_writes_nothing_in_read_only_mode(tmp_path: Path, figures: Any) -> None:
    """The guard: a new public method of a service (or a function taking one) fails here until it has a
    recipe; with one, it must write nothing in read-only mode, and if it writes in normal mode it must refuse
    (ReadOnlyError) unless it is a dry run that writes nothing."""
    found = _entry_points()
    assert found == set(RECIPES), (
        f"entry points without a recipe: {sorted(found - set(RECIPES))}; "
        f"recipes of entry points that are gone: {sorted(set(RECIPES) - found)}"
    )
    mutating = set()
    for i, (name, recipe) in enumerate(sorted(RECIPES.items())):
        stores, clock, log, close = _recorded(tmp_path / f"w{i}")
        try:
            refused = _refused(name, recipe, stores, clock)
            assert log == [], f"{name} wrote in read-only mode: {log}"
            recipe(stores, clock, False)
            if log:
                mutating.add(name)
                assert refused or name in ALLOWED_IN_READ_ONLY, f"{name} writes, yet was not refused"
        finally:
            close()
    # The recipes do reach the writes (else the check above would prove nothing).
    assert mutating == {
        "IngestService.ingest",
        "IngestService.ingest_batch",
        "IngestService.ingest_stream",
        "IngestService.resume_stream",
        "IngestService.commit",
        "ReplayService.plan",
        "ReplayService.execute",
        "replay.api_reply",
        "ProcessorService.process",
        "ProcessorService.recompute",
        "DrainService.run",
    }
    figures(
        "read-only: service entry points (introspected)",
        entry_points=len(found),
        mutating=len(mutating),
        written_in_read_only=0,
    )


def _contents(a: Adapter | Stores) -> dict[str, Any]:
    """Everything a read-only call could have changed, read through the ports."""
    receipts = []
    for entity in ("u1", "u2", "u3", "u4"):
        receipts += a.index.query_entity(
            entity, "2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z", limit=1000
        ).items
    return {
        "stats": a.index.stats(),
        "receipts": receipts,
        "rejections": a.index.query_rejections(limit=1000).items,
        "audit": a.audit.query(limit=1000).items,
        "queue": a.queue.depth(),
        "dead": a.queue.dead_letters(limit=1000).items,
        "versions": [a.aggregates.versions(e, DAY, limit=1000).items for e in ("u1", "u3", "u4")],
        "raw_missing": a.catalog.missing([prepare(b).raw_key for b in NEW[:2]]),
    }


@pytest.mark.parametrize("name", ["local", "aws"])
def test_read_only_services_write_nothing_on_either_adapter(name: str, tmp_path: Path, figures: Any) -> None:
    with open_adapter(name, tmp_path) as a:
        clock = FixedClock(T0)
        stores = Stores(a.raw, a.index, a.investigate, a.catalog, a.queue, a.audit, a.aggregates)
        _seed(stores, clock)
        before = _contents(a)
        assert before["queue"].visible == 4 and len(before["audit"]) == 1
        refused = sum(_refused(recipe_name, recipe, stores, clock) for recipe_name, recipe in RECIPES.items())
        # All but the dry run (plan) and the five reads of LagService, GapService, VersionService and
        # ReportService.
        assert refused == len(RECIPES) - len(ALLOWED_IN_READ_ONLY) - 5
        # pik process: even a dry run would receive (and count receives toward the dead-letter queue).
        with pytest.raises(ReadOnlyError, match="read-only"):
            drain(
                a.queue,
                _processor(stores, clock, read_only=True, dry_run=True),
                30,
                None,
                io.StringIO(),
                True,
            )
        refused += 1
        assert _contents(a) == before
    figures(
        f"read-only: every service entry point on {name}", calls=len(RECIPES) + 1, refused=refused, changed=0
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    clock = FixedClock(T0)
    store = LocalStore(ws, clock=clock)
    local = local_ports(store, clock=clock)
    _seed(
        Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates),
        clock,
    )
    store.close()
    return ws


def _workspace_contents(ws: Path) -> dict[str, Any]:
    store = LocalStore(ws, create=False)
    try:
        local = local_ports(store)
        return _contents(
            Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates)
        )
    finally:
        store.close()


def test_pik_commands_refuse_to_write_in_read_only_mode(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    lines = tmp_path / "new.jsonl"
    lines.write_bytes(b"\n".join(NEW) + b"\n")
    ws = ["--workspace", str(workspace)]
    scope = ["--entity", "u1", "--day", DAY]
    cases = [
        ["ingest", str(lines)],
        ["ingest", "-"],
        ["replay", *scope, "--execute", "--force"],
        ["process"],
        ["process", "--dry-run"],
    ]
    before = _workspace_contents(workspace)
    tried = 0
    for how in ("--read-only", "PIK_READ_ONLY"):
        for value in ("1", "true", "yes", "on") if how == "PIK_READ_ONLY" else ("",):
            for argv in cases:
                monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(NEW))))
                if how == "PIK_READ_ONLY":
                    monkeypatch.setenv("PIK_READ_ONLY", value)
                    code, out, err = cli(*argv, *ws)
                else:
                    monkeypatch.delenv("PIK_READ_ONLY", raising=False)
                    code, out, err = cli(*argv, *ws, "--read-only")
                tried += 1
                assert code == 1, (how, argv, err)
                assert err.startswith(f"pik {argv[0]}: error: ") and "read-only" in err, err
                assert err.count("\n") == 1 and "Traceback" not in err
                assert "running the same command again" not in err  # nothing was stored: no such advice
    # A dry run of a replay is still allowed, and audits nothing.
    code, out, err = cli("replay", *scope, *ws, "--read-only")
    assert code == 0 and "DRY RUN" in out, err
    monkeypatch.setenv("PIK_READ_ONLY", "maybe")
    code, _, err = cli("ingest", str(lines), *ws)
    assert code == 2 and "PIK_READ_ONLY must be true or false" in err
    monkeypatch.setenv("PIK_READ_ONLY", "1")
    code, _, err = cli("demo", "--workspace", str(tmp_path / "no-demo"), "--no-console")
    assert code == 1 and "read-only" in err and not (tmp_path / "no-demo").exists()
    code, _, err = cli("aws", "init", "--endpoint-url", "http://127.0.0.1:1")
    assert code == 1 and "read-only" in err
    assert _workspace_contents(workspace) == before
    figures(
        "read-only: pik commands",
        commands_tried=tried + 4,
        refused_exit_1=tried + 2,  # and pik demo, pik aws init
        dry_run_allowed=1,
        bad_setting_exit_2=1,
        changed=0,
    )


def _handlers_read_only(context: FakeLambdaContext) -> tuple[int, int, int]:
    response = ingest_handler.handler(rest_v1_event(NEW[0].decode()), context)
    body = json.dumps({**U1_REQUEST.model_dump(exclude_none=True), "force": True})
    replayed = replay_handler.handler(replay_v1(body), context)
    assert "read-only" in json.loads(replayed["body"])["error"]
    answer = processor_handler.handler(sqs_event([sqs_record(MESSAGE), sqs_record(MESSAGE)]), context)
    return response["statusCode"], replayed["statusCode"], len(answer["batchItemFailures"])


def test_the_handlers_refuse_with_pik_read_only_in_their_environment(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    monkeypatch.setenv("PIK_READ_ONLY", "true")
    monkeypatch.setenv("PIK_BACKEND", "local")
    monkeypatch.setenv("PIK_WORKSPACE", str(workspace))
    before = _workspace_contents(workspace)
    common.configure(None)  # the settings and the backend from the environment, as in Lambda
    try:
        assert _handlers_read_only(FakeLambdaContext()) == (403, 403, 2)
    finally:
        backend = common.get_backend()
        common.configure(None)
        backend.close()
    assert _workspace_contents(workspace) == before
    figures("read-only: handlers with PIK_READ_ONLY (local)", handlers=3, refused=3, changed=0)


def test_the_handlers_refuse_with_pik_read_only_on_aws(monkeypatch: pytest.MonkeyPatch, figures: Any) -> None:
    from backend.adapters.aws.ports import aws_ports
    from tests.aws_env import moto_backend
    from tests.handlers.support import lambda_environment

    store, settings, close = moto_backend()
    try:
        ports = aws_ports(store, settings)
        stores = Stores(
            store, store, ports.investigate, ports.catalog, ports.queue, ports.audit, ports.aggregates
        )
        _seed(stores, FixedClock(T0))
        before = _contents(stores)
        lambda_environment(monkeypatch, settings)  # the stack from the environment, as in Lambda
        monkeypatch.setenv("PIK_READ_ONLY", "1")
        try:
            assert _handlers_read_only(FakeLambdaContext()) == (403, 403, 2)
        finally:
            common.configure(None)
        assert _contents(stores) == before
    finally:
        close()
    figures("read-only: handlers with PIK_READ_ONLY (aws)", handlers=3, refused=3, changed=0)


# == the replay size guard through the API ===================================================================

REFUSED_FORCE: list[tuple[str, Any]] = [
    ("missing", ...),
    ("false", False),
    ('"true"', "true"),
    ("1", 1),
    ('"yes"', "yes"),
    ("null", None),
    ("[]", []),
    ("[true]", [True]),
    ("{}", {}),
    ("1.0", 1.0),
    ('"1"', "1"),
]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[LocalStore, Any]]:
    """Five events of u1 behind a size guard of three, the replay handler running on them."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "settings.toml").write_text("[replay]\nconfirm_above = 3\n", encoding="utf-8")
    backend = open_local(ws)
    store = backend.index
    IngestService(store, store).ingest_batch([Received(event("u1", m)) for m in range(5)])
    common.configure(backend, RuntimeSettings(backend="local"))
    try:
        yield store, local_ports(store)
    finally:
        common.configure(None)
        backend.close()


def _replay_call(body: str, v2: bool = False) -> tuple[int, dict[str, Any]]:
    alice = "arn:aws:iam::123456789012:user/alice"
    event = (
        replay_v2(body, authorizer={"iam": {"userArn": alice}})
        if v2
        else replay_v1(body, identity={"userArn": alice})
    )
    response = replay_handler.handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_the_size_guard_yields_only_to_a_json_true_force(
    guarded: tuple[LocalStore, Any], figures: Any
) -> None:
    _, ports = guarded
    base = {"entity_id": "u1", "start_time": WINDOW[0], "end_time": WINDOW[1]}
    bodies = [
        (label, json.dumps(base if force is ... else {**base, "force": force}))
        for label, force in REFUSED_FORCE
    ]
    # The flag anywhere but the top level, under another name, or twice (ambiguous: parsers keep either).
    bodies += [
        ("Force", json.dumps({**base, "Force": True})),
        ("nested", json.dumps({**base, "options": {"force": True}})),
        ("twice", json.dumps(base)[:-1] + ', "force": false, "force": true}'),
        ("dry_run as a string", json.dumps({**base, "dry_run": "false"})),
    ]
    statuses = {}
    for v2 in (False, True):
        for label, body in bodies:
            status, reply = _replay_call(body, v2)
            statuses[(label, v2)] = status
            assert 400 <= status < 500, (label, status, reply)
            assert reply.get("sent", 0) == 0 and "error" in reply, (label, reply)
            assert ports.queue.depth().visible == 0, label
    # The refusals that are replays (the size guard) are audited as REFUSED with who asked; malformed flags
    # are bad requests (400), as any other malformed field, and leave no record.
    audit = ports.audit.query(limit=100).items
    guard_refusals = [k for k, s in statuses.items() if s == 409]
    assert sorted(guard_refusals) == sorted(
        (label, v2) for label in ("missing", "false") for v2 in (False, True)
    )
    assert len(audit) == len(guard_refusals)
    for record in audit:
        assert record.outcome is ReplayOutcome.REFUSED and record.sent == 0 and record.would_send == 5
        assert record.actor == "arn:aws:iam::123456789012:user/alice" and "size guard" in (record.error or "")
        assert record.forced is False
    status, reply = _replay_call(json.dumps({**base, "force": True}))
    assert (status, reply["sent"], reply["outcome"], reply["forced"]) == (200, 5, "SENT", True)
    assert ports.queue.depth().visible == 5
    figures(
        "replay size guard through the handler",
        requests=len(statuses) + 1,
        refused_4xx=len(statuses),
        audited_refusals=len(guard_refusals),
        sent_without_true=0,
    )


# == logs: no credentials, no payloads =======================================================================


def _probe(
    tmp_path: Path, level: str, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[str], dict[str, str], Path]:
    canaries = {
        "payload": f"pik-canary-payload-{secrets.token_hex(8)}",
        "header": f"pik-canary-header-{secrets.token_hex(8)}",
        "secret_key": f"pik-canary-secret-{secrets.token_hex(8)}",
        "session_token": f"pik-canary-token-{secrets.token_hex(8)}",
    }
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIK_", "POWERTOOLS_", "DRY_RUN"))
    }
    cli_out = tmp_path / f"cli-{level}.txt"
    env.update(
        LOG_LEVEL=level,
        PYTHONPATH=str(ROOT),
        AWS_ACCESS_KEY_ID="AKIAPROBE",
        AWS_SECRET_ACCESS_KEY=canaries["secret_key"],
        AWS_SESSION_TOKEN=canaries["session_token"],
        PROBE_AWS_SECRET_ACCESS_KEY=canaries["secret_key"],
        PROBE_AWS_SESSION_TOKEN=canaries["session_token"],
        PROBE_PAYLOAD_SECRET=canaries["payload"],
        PROBE_HEADER_SECRET=canaries["header"],
        PROBE_CLI_OUT=str(cli_out),
        **extra_env,
    )
    work = tmp_path / level
    work.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.log_probe", str(work)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, canaries, cli_out


def test_logs_hold_no_credentials_and_no_payload(tmp_path: Path, figures: Any) -> None:
    runs = {
        "INFO": _probe(tmp_path, "INFO", {}),
        # Debug logging asked for, twice over: the kit's level, and Powertools' own event logging switch.
        "DEBUG": _probe(tmp_path, "DEBUG", {"POWERTOOLS_LOGGER_LOG_EVENT": "true"}),
    }
    results = {}
    for level, (child, canaries, cli_out) in runs.items():
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr[-3000:]
        steps = json.loads(stdout.strip().splitlines()[-1])["probe_steps"]
        assert len(steps) >= 30, steps
        results[level] = (stdout, stderr, canaries, cli_out.read_text(encoding="utf-8"), steps)

    stdout, stderr, canaries, cli_stdout, steps = results["INFO"]
    logs = stdout + stderr
    assert logs.count('"service":"pipeline-investigation-kit"') >= 20  # the handlers did log
    for name, canary in canaries.items():
        assert canary not in logs, f"the {name} secret is in the logs at INFO"
    # The commands' own output (what the user asked for) holds no secret either, but for the one place it
    # quotes the user's own input back: a field sent with the wrong type, in the rejection's reason.
    for line in cli_stdout.splitlines():
        for name, canary in canaries.items():
            if canary in line:
                assert name == "payload" and "entity_id: must be a string, got dict" in line, line
    lines = logs.splitlines()
    figures(
        "logs at INFO: handlers and pik commands",
        steps=len(steps),
        log_lines=len(lines),
        secrets_planted=len(canaries),
        secrets_in_logs=0,
    )

    # At DEBUG: the kit's own lines add the rejection reasons as answered (which may quote a value sent in
    # the wrong field); Powertools' event logging stays off (the handlers pass log_event=False); libraries
    # log at DEBUG only when the root logger is set so (here it is): botocore then logs request bodies (the
    # raw event bytes) and headers, the session token among them. The secret access key never appears.
    stdout, stderr, canaries, _, _ = results["DEBUG"]
    kit_lines = [line for line in stdout.splitlines() if '"service":"pipeline-investigation-kit"' in line]
    kit = "\n".join(kit_lines)
    assert canaries["secret_key"] not in stdout + stderr
    assert canaries["session_token"] not in kit and canaries["header"] not in kit
    with_payload = [line for line in kit_lines if canaries["payload"] in line]
    assert with_payload and all('"rejection reason as answered"' in line for line in with_payload)
    figures(
        "logs at DEBUG: what appears",
        kit_lines=len(kit_lines),
        kit_lines_with_payload_values=len(with_payload),
        kit_lines_with_credentials=0,
        library_lines_with_session_token=sum(
            canaries["session_token"] in line for line in stderr.splitlines()
        ),
        library_lines_with_payload=sum(canaries["payload"] in line for line in stderr.splitlines()),
        secret_key_anywhere=0,
    )


def test_a_rejection_is_logged_without_the_values_it_quotes(tmp_path: Path, backend: Any) -> None:
    """Regression: the ingest handler logged a rejection's reason at INFO, and a reason quotes the value of
    a field with the wrong type (up to 63 characters): a secret sent in the wrong field went to the logs."""
    from tests.handlers.support import captured_logs

    secret = f"pik-canary-{secrets.token_hex(8)}"
    body = json.dumps({"source": "web", "event_type": "click", "entity_id": {"password": secret},
                       "event_time": "2025-12-01T10:00:00Z", "payload": {}})  # fmt: skip
    with captured_logs(ingest_handler.logger) as logs:
        response = ingest_handler.handler(rest_v1_event(body), FakeLambdaContext())
    answered = json.loads(response["body"])
    assert response["statusCode"] == 400 and secret in answered["reason"]  # the sender is told what is wrong
    logged = [json.loads(line) for line in logs.getvalue().splitlines()]
    (line,) = [entry for entry in logged if entry["message"] == "ingest"]
    assert line["reason"] == "entity_id: must be a string, got dict"
    assert secret not in logs.getvalue()
