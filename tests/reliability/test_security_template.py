"""Security: least privilege in the template.

* ``backend/template.yaml``, what ``tests/aws/test_template.py`` does not check yet: nothing but the signed
  API (and the queue) invokes a function; every Allow is scoped to this stack's own resources (no exception
  is needed, and the list of them is empty); no role may delete or rewrite what the kit keeps, and each role
  writes only its own stores; the roles still allow every call the functions make (run on moto); the
  bucket's TLS, encryption and public-access settings one by one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from backend.handlers import common
from backend.handlers import ingest as ingest_handler
from backend.handlers import processor as processor_handler
from backend.handlers import replay as replay_handler
from tests.handlers.support import replay_v1, sqs_event
from tests.handlers.test_ingest_handler import FakeLambdaContext, rest_v1_event
from tests.reliability.security_support import DAY, WINDOW, event


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
    """(role, statement) for every Allow statement of every role's inline policies and of every policy
    resource attached to a role (conditional ones included)."""
    policies: list[tuple[str, dict[str, Any]]] = []
    for name, role in _of_type(template, "AWS::IAM::Role").items():
        policies += [(name, policy) for policy in role["Properties"].get("Policies", [])]
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        policies += [(ref["Ref"], policy["Properties"]) for ref in policy["Properties"]["Roles"]]
    for name, policy in policies:
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
# cloudwatch:PutMetricData or xray:PutTraceSegments). Metrics are EMF log lines, so only tracing needs any:
# X-Ray's two write actions, granted to each function's role only when the stack's EnableTracing is true.
# A new one must be added here, with its reason, for the test below to pass.
_TRACING = "X-Ray takes no resource ARN for its writes; granted only under the TracingEnabled condition"
UNSCOPED_EXCEPTIONS: dict[tuple[str, str], str] = {
    (role, action): _TRACING
    for role in ("IngestFunctionRole", "ReplayFunctionRole", "ProcessorFunctionRole", "RollupFunctionRole")
    for action in ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
}


def _resource_target(resource: Any) -> tuple[str, str | None]:
    """(logical id, path below its ARN or None) of a resource written as ``!GetAtt X.Arn`` or
    ``!Sub "${X.Arn}/path"``; AssertionError for anything else (a literal ARN, a wildcard, another
    stack's)."""
    if isinstance(resource, dict) and list(resource) == ["Fn::GetAtt"]:
        logical, attribute = resource["Fn::GetAtt"]
        assert attribute in ("Arn", "StreamArn"), resource  # a table's stream is the table's
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
        if all((role, action) in UNSCOPED_EXCEPTIONS for action in actions):
            assert statement["Resource"] == "*", (role, statement.get("Sid"))
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
    assert all(UNSCOPED_EXCEPTIONS.values()), "document why each exception cannot be scoped"
    assert checked >= 20
    figures(
        "template: every Allow scoped to this stack",
        resources_checked=checked,
        unscoped_exceptions=len(UNSCOPED_EXCEPTIONS),
    )


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
    # Counters added to the rollup items only (ROLLUP_ONLY), and failed stream batches to its own queue.
    "RollupFunctionRole": {
        ("dynamodb:UpdateItem", "EventsTable", None),
        ("sqs:SendMessage", "RollupDeadLetterQueue", None),
    },
    "ProcessorFunctionRole": {
        ("dynamodb:PutItem", "AggregatesTable", None),
        ("s3:PutObject", "RawBucket", "manifests/*"),
        ("sqs:DeleteMessage", "ReplayQueue", None),
        ("sqs:ChangeMessageVisibility", "ReplayQueue", None),
    },
}
# The one way UpdateItem is granted: on items whose partition key starts ROLLUP# (no receipt, rejection or
# other kit item has one), so the rollup function can add to its counters and rewrite nothing else.
ROLLUP_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ROLLUP#*"]}}
READ_PREFIXES = ("Get", "Query", "Scan", "List", "Describe", "BatchGet", "ConditionCheck", "ReceiveMessage")


def test_no_role_may_delete_or_rewrite_and_each_writes_only_its_own_stores(
    sam: dict[str, Any], figures: Any
) -> None:
    writes: dict[str, set[tuple[str, str, str | None]]] = {role: set() for role in WRITES}
    for role, statement in _allows(sam):
        if statement.get("Principal") is not None:
            continue
        for action in _as_list(statement["Action"]):
            rollups_only = action == "dynamodb:UpdateItem" and statement.get("Condition") == ROLLUP_ONLY
            assert rollups_only or not action.startswith(FORBIDDEN_ACTIONS), f"{role} may {action}"
            if (role, action) in UNSCOPED_EXCEPTIONS:
                continue  # tracing data, not the kit's stores
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
    assert sorted((m["Properties"]["EventSourceArn"] for m in mappings.values()), key=str) == [
        {"Fn::GetAtt": ["EventsTable", "StreamArn"]},  # the rollup function (EnableRollups)
        {"Fn::GetAtt": ["ReplayQueue", "Arn"]},
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
