"""backend/template.yaml: it lints, it deploys (on moto) exactly the resources of resources.py, and it keeps
its promises on access: SigV4 on every route, least-privilege roles, a private TLS-only encrypted bucket.

The SAM template is translated to plain CloudFormation here the way CloudFormation's transform does it
(samtranslator), with no AWS credentials and no network: the only lookup the translator could make, the
managed-policy list, is refused, since the template names no managed policy.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import lint
from cfnlint.decode.decode import decode_str
from moto import mock_aws
from samtranslator.translator.transform import transform

from backend.adapters.aws import resources as res

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "backend" / "template.yaml"
REGION = "us-east-1"
CODE_BUCKET = "pik-code"
CODE_KEY = "pik.zip"
LAYER_KEY = "pik-layer.zip"

# Environment variables every function gets: the settings, then the runtime switches and Powertools'.
RUNTIME_ENV = ("DRY_RUN", "LOG_LEVEL", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE")
FUNCTIONS = {
    "IngestFunction": "backend.handlers.ingest.handler",
    "ReplayFunction": "backend.handlers.replay.handler",
    "ProcessorFunction": "backend.handlers.processor.handler",
    "RollupFunction": "backend.handlers.rollup.handler",  # only with EnableRollups=true
}
DEFAULT_FUNCTIONS = {k: v for k, v in FUNCTIONS.items() if k != "RollupFunction"}
ROUTES = {("POST", "/ingest"): "IngestFunction", ("POST", "/replay"): "ReplayFunction"}
# Outputs for the operator (alarms, the access log), beside the ones `pik --stack NAME` reads.
OPERATIONS_OUTPUTS = {"ApiAccessLogGroupName", "ReplayDeadLetterQueueAlarmName", "ProcessorErrorAlarmName"}


class _NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which would ask IAM for every managed policy."""

    def load(self) -> dict[str, str]:
        raise AssertionError("the template names a managed policy; write explicit statements instead")


def load_template() -> dict[str, Any]:
    """The SAM template as plain data (short-form intrinsics like ``!Ref`` in their long form)."""
    decoded, errors = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    assert not errors, errors
    data: dict[str, Any] = json.loads(json.dumps(decoded))
    return data


def translate(sam: dict[str, Any]) -> dict[str, Any]:
    """Plain CloudFormation, as after ``sam package`` (code in S3) and the serverless transform."""
    sam = copy.deepcopy(sam)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = f"s3://{CODE_BUCKET}/{LAYER_KEY}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", REGION)  # the translator fills AWS::Region from the session
        translated: dict[str, Any] = transform(sam, {}, _NoManagedPolicies())  # type: ignore[arg-type]
    return translated


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return translate(sam)


def _resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _lint_messages(text: str) -> list[str]:
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in lint(text, regions=[REGION])]


# -- lint -----------------------------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_sam_template() -> None:
    assert _lint_messages(TEMPLATE.read_text(encoding="utf-8")) == []


def test_cfn_lint_passes_on_the_translated_template(cfn: dict[str, Any]) -> None:
    # Some checks (IAM action names among them) run only on plain CloudFormation, not on SAM templates.
    assert _lint_messages(json.dumps(cfn, indent=1)) == []


# -- the resources of resources.py ------------------------------------------------------------------------


def _new_stack_indexes(props: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's indexes as a new stack has them (IndexProjection=INCLUDE); a stack deployed before
    payloads were carried keeps ALL (CloudFormation cannot change an index's projection in place)."""
    out = []
    for gsi in props.get("GlobalSecondaryIndexes", []):
        projection = gsi["Projection"]
        if "Fn::If" in projection:
            condition, new, old = projection["Fn::If"]
            assert condition == "IndexesIncludeListed" and old == {"ProjectionType": "ALL"}
            projection = new
        out.append({**gsi, "Projection": projection})
    return out


def test_tables_are_declared_as_resources_py_says(sam: dict[str, Any]) -> None:
    tables = _resources(sam, "AWS::DynamoDB::Table")
    assert set(tables) == {t.logical_id for t in res.TABLES}
    for spec in res.TABLES:
        props = tables[spec.logical_id]["Properties"]
        expected = spec.create_table_kwargs("unused")
        assert props["KeySchema"] == expected["KeySchema"], spec.logical_id
        assert sorted(props["AttributeDefinitions"], key=str) == sorted(
            expected["AttributeDefinitions"], key=str
        )
        assert _new_stack_indexes(props) == expected.get("GlobalSecondaryIndexes", [])
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        # Losing a table to a stack update or deletion would lose the index, dedupe state or audit trail.
        assert tables[spec.logical_id]["DeletionPolicy"] == "Retain"
        assert tables[spec.logical_id]["UpdateReplacePolicy"] == "Retain"
        assert "TimeToLiveSpecification" not in props  # an expired dedupe item would re-accept an event


def test_queue_settings_and_processor_timeout(sam: dict[str, Any]) -> None:
    queue = sam["Resources"][res.REPLAY_QUEUE.logical_id]["Properties"]
    dlq = sam["Resources"][res.REPLAY_DLQ.logical_id]["Properties"]
    assert queue["VisibilityTimeout"] == res.VISIBILITY_TIMEOUT
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [res.REPLAY_DLQ.logical_id, "Arn"]},
        "maxReceiveCount": res.MAX_RECEIVE_COUNT,
    }
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    processor = sam["Resources"]["ProcessorFunction"]["Properties"]
    # A message must not become visible again while a processor may still be working on it.
    assert processor["Timeout"] * 6 <= res.VISIBILITY_TIMEOUT
    (event,) = processor["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": [res.REPLAY_QUEUE.logical_id, "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= event["Properties"]["BatchSize"] <= 10


def test_functions_environment_names_and_values(cfn: dict[str, Any]) -> None:
    functions = _resources(cfn, "AWS::Lambda::Function")
    assert {k: f["Properties"]["Handler"] for k, f in functions.items()} == FUNCTIONS
    refs = {
        res.RAW_BUCKET.setting: res.RAW_BUCKET.logical_id,
        **{t.setting: t.logical_id for t in res.TABLES},
        res.REPLAY_QUEUE.setting: res.REPLAY_QUEUE.logical_id,
        res.REPLAY_DLQ.setting: res.REPLAY_DLQ.logical_id,
    }
    for name, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert list(variables) == [*res.SETTINGS, *RUNTIME_ENV], name
        for setting, logical_id in refs.items():
            assert variables[setting] == {"Ref": logical_id}, (name, setting)
        assert variables["DRY_RUN"] == {"Ref": "DryRun"}
        assert variables["LOG_LEVEL"] == {"Ref": "LogLevel"}
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "PipelineInvestigationKit"


def test_parameters(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    assert params["EnableProcessor"]["Default"] == "false"
    assert sorted(params["EnableProcessor"]["AllowedValues"]) == ["false", "true"]
    assert params["DryRun"]["Default"] == "false"
    assert params["LogLevel"]["Default"] == "INFO"


def test_outputs_are_named_as_resources_py_says(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    assert set(outputs) == {*res.OUTPUT_TO_SETTING, "ApiUrl", *OPERATIONS_OUTPUTS}
    named = [res.RAW_BUCKET, *res.TABLES, res.REPLAY_QUEUE, res.REPLAY_DLQ]
    for resource in named:
        assert outputs[resource.output]["Value"] == {"Ref": resource.logical_id}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_code_uri_holds_the_backend_package(sam: dict[str, Any], function: str) -> None:
    # The folder `make deploy-build` fills with the backend package alone (tests/aws/test_artifact.py builds
    # it and imports every handler from it); built already, so `sam build` leaves it as it is.
    code_uri = sam["Resources"][function]["Properties"]["CodeUri"]
    assert (TEMPLATE.parent / code_uri).resolve() == ROOT / "build" / "lambda" / "code"
    assert sam["Resources"][function]["Metadata"]["SkipBuild"] is True
    root = ROOT
    module = FUNCTIONS[function].rsplit(".", 1)[0]
    package = root.joinpath(*module.split(".")[:-1])
    assert (package / "__init__.py").is_file(), f"{package} is not a package"
    source = root.joinpath(*module.split(".")).with_suffix(".py")
    if not source.exists():
        pytest.skip(f"{module} is not written yet")
    assert "def handler" in source.read_text(encoding="utf-8") or "handler =" in source.read_text(
        encoding="utf-8"
    )


# -- access -----------------------------------------------------------------------------------------------


def test_every_api_route_requires_sigv4(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    apis = _resources(sam, "AWS::Serverless::Api")
    assert apis, "the template declares no API"
    for api in apis.values():
        assert api["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    routes = {}
    for name, function in _resources(sam, "AWS::Serverless::Function").items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] in ("Api", "HttpApi"):
                props = event["Properties"]
                assert props["RestApiId"]["Ref"] in apis
                assert "Auth" not in props, f"{name} overrides the API's AWS_IAM authorizer"
                routes[(props["Method"].upper(), props["Path"])] = name
    assert routes == ROUTES

    # And in what API Gateway receives: every method of every path is SigV4-signed.
    (rest,) = _resources(cfn, "AWS::ApiGateway::RestApi").values()
    body = rest["Properties"]["Body"]
    schemes = body.get("securityDefinitions") or body["components"]["securitySchemes"]
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    deployed = set()
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"AWS_IAM": []}], (method, path)
            deployed.add((method.upper(), path))
    assert deployed == set(ROUTES)


def _statements(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every policy document anywhere below ``node``, with where it is."""
    if isinstance(node, dict):
        if "Statement" in node and isinstance(node["Statement"], list):
            for statement in node["Statement"]:
                yield where, statement
        for key, value in node.items():
            yield from _statements(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _statements(value, f"{where}/{i}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# The only actions granted on every resource: X-Ray's writes take no resource ARN. They are granted only
# under the TracingEnabled condition (EnableTracing=true).
UNSCOPED_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.mark.parametrize("which", ["sam", "translated"])
def test_least_privilege(sam: dict[str, Any], cfn: dict[str, Any], which: str) -> None:
    template = sam if which == "sam" else cfn
    found = list(_statements(template["Resources"]))
    allows = [(w, s) for w, s in found if s["Effect"] == "Allow"]
    assert len(allows) >= 10, "expected the roles' statements"
    for where, statement in allows:
        assert "NotAction" not in statement and "NotResource" not in statement, where
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{where}: wildcard action {action!r}"
        if statement.get("Principal") == {"Service": "lambda.amazonaws.com"}:
            continue  # a trust policy names who may assume the role, not what it may touch
        if set(_as_list(statement["Action"])) <= UNSCOPED_ACTIONS:
            resource_id = where.split("/")[1]
            assert template["Resources"][resource_id].get("Condition") in (
                "TracingEnabled",
                "RollupsAndTracing",
            ), where
            assert statement["Resource"] == "*", where
            continue
        for resource in _as_list(statement["Resource"]):
            assert resource != "*", f"{where}: statement on every resource"
    # No managed policies either: AWS's execution-role policies grant logs and SQS on every resource.
    for name, role in _resources(cfn, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name
    for name, function in _resources(sam, "AWS::Serverless::Function").items():
        assert "Policies" not in function["Properties"], name
        assert function["Properties"]["Role"] == {"Fn::GetAtt": [f"{name}Role", "Arn"]}


def test_bucket_is_private_encrypted_and_tls_only(sam: dict[str, Any]) -> None:
    bucket_id = res.RAW_BUCKET.logical_id
    bucket = sam["Resources"][bucket_id]
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["DeletionPolicy"] == "Retain"  # raw data outlives the stack

    policies = [
        p["Properties"]
        for p in _resources(sam, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    assert len(policies) == 1
    denies = [
        s
        for s in policies[0]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        and s["Principal"] == "*"
        and _as_list(s["Action"]) == ["s3:*"]
    ]
    assert len(denies) == 1
    assert _as_list(denies[0]["Resource"]) == [
        {"Fn::GetAtt": [bucket_id, "Arn"]},
        {"Fn::Sub": f"${{{bucket_id}.Arn}}/*"},
    ]


# -- deployed on moto ---------------------------------------------------------------------------------------


def _without_api(cfn: dict[str, Any]) -> dict[str, Any]:
    """The template minus what moto cannot create (API Gateway from an OpenAPI body) and what refers to it."""
    body = copy.deepcopy(cfn)
    gone = {k for k, v in body["Resources"].items() if v["Type"].startswith("AWS::ApiGateway::")}
    assert gone, "expected API Gateway resources"

    def refers(node: Any) -> bool:
        text = json.dumps(node)
        return any(f'"{g}"' in text or f"${{{g}}}" in text or f"${{{g}." in text for g in gone)

    while True:
        more = {k for k, v in body["Resources"].items() if k not in gone and refers(v)}
        if not more:
            break
        gone |= more
    for key in gone:
        del body["Resources"][key]
    body["Outputs"] = {k: v for k, v in body["Outputs"].items() if not refers(v)}
    return body


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def _create_stack(name: str, body: dict[str, Any], **parameters: str) -> dict[str, str]:
    cfn = boto3.client("cloudformation", region_name=REGION)
    with warnings.catch_warnings():
        # moto has no CloudFormation support for bucket policies; the static test checks ours.
        warnings.filterwarnings("ignore", message=".*AWS::S3::BucketPolicy.*")
        # Nor for alarms; the static tests check them (and the outputs that name them are left out).
        warnings.filterwarnings("ignore", message=".*AWS::CloudWatch::Alarm.*")
        cfn.create_stack(
            StackName=name,
            TemplateBody=json.dumps(body),
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
    (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def _upload_code() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=CODE_BUCKET)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("backend/__init__.py", "")
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=zipped.getvalue())
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("python/.keep", "")
    s3.put_object(Bucket=CODE_BUCKET, Key=LAYER_KEY, Body=layer.getvalue())


def test_stack_on_moto_creates_exactly_the_resources(aws: None, cfn: dict[str, Any]) -> None:
    _upload_code()
    outputs = _create_stack("pik", _without_api(cfn))
    assert set(outputs) - OPERATIONS_OUTPUTS == set(res.OUTPUT_TO_SETTING)
    assert "ApiAccessLogGroupName" not in outputs  # ApiAccessLogs defaults to false
    settings = {res.OUTPUT_TO_SETTING[k]: v for k, v in outputs.items()}

    ddb = boto3.client("dynamodb", region_name=REGION)
    for spec in res.TABLES:
        table = ddb.describe_table(TableName=settings[spec.setting])["Table"]
        expected = spec.create_table_kwargs(settings[spec.setting])
        assert table["KeySchema"] == expected["KeySchema"], spec.logical_id
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            expected["AttributeDefinitions"], key=str
        )
        indexes = {
            g["IndexName"]: (g["KeySchema"], g["Projection"]) for g in table.get("GlobalSecondaryIndexes", [])
        }
        assert indexes == {
            g["IndexName"]: (g["KeySchema"], g["Projection"])
            for g in expected.get("GlobalSecondaryIndexes", [])
        }
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    sqs = boto3.client("sqs", region_name=REGION)
    dlq_url = settings[res.REPLAY_DLQ.setting]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue = sqs.get_queue_attributes(QueueUrl=settings[res.REPLAY_QUEUE.setting], AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": res.MAX_RECEIVE_COUNT,
    }
    assert int(queue["VisibilityTimeout"]) == res.VISIBILITY_TIMEOUT
    assert queue["SqsManagedSseEnabled"] == "true"

    s3 = boto3.client("s3", region_name=REGION)
    (rule,) = s3.get_bucket_encryption(Bucket=settings[res.RAW_BUCKET.setting])[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    lam = boto3.client("lambda", region_name=REGION)
    functions = {f["Handler"]: f for f in lam.list_functions()["Functions"]}
    assert set(functions) == set(DEFAULT_FUNCTIONS.values())
    for function in functions.values():
        variables = function["Environment"]["Variables"]
        assert sorted(variables) == sorted([*res.SETTINGS, *RUNTIME_ENV])
        # Each function is pointed at this stack's resources, by the names the outputs give.
        # (moto hands a Number parameter back as a number; Lambda's environment holds text)
        assert {k: str(variables[k]) for k in res.SETTINGS} == settings
        assert variables["DRY_RUN"] == "false"

    iam = boto3.client("iam", region_name=REGION)
    for function in functions.values():
        role = function["Role"].rsplit("/", 1)[-1]
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        assert len(iam.list_role_policies(RoleName=role)["PolicyNames"]) == 1

    processor = functions[FUNCTIONS["ProcessorFunction"]]["FunctionName"]
    (mapping,) = lam.list_event_source_mappings(FunctionName=processor)["EventSourceMappings"]
    assert mapping["EventSourceArn"] == queue["QueueArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["State"] == "Disabled"  # EnableProcessor defaults to false


def test_enable_processor_turns_the_event_source_on(aws: None, cfn: dict[str, Any]) -> None:
    _upload_code()
    _create_stack("pik-on", _without_api(cfn), EnableProcessor="true", DryRun="true")
    lam = boto3.client("lambda", region_name=REGION)
    (mapping,) = lam.list_event_source_mappings()["EventSourceMappings"]
    assert mapping["State"] == "Enabled"
    for function in lam.list_functions()["Functions"]:
        assert function["Environment"]["Variables"]["DRY_RUN"] == "true"


def test_the_cli_finds_every_resource_by_stack_name(aws: None, cfn: dict[str, Any], tmp_path: Path) -> None:
    # `--stack NAME` reads the outputs of the deployed template: ingest and read back with nothing else.
    from pik_console.cli import main

    _upload_code()
    _create_stack("pik-prod", _without_api(cfn))
    events = tmp_path / "events.jsonl"
    line = (
        '{"source":"demo","event_type":"heartbeat","entity_id":"user_123",'
        '"event_time":"2025-12-28T23:59:59Z","payload":{"steps":10}}\n'
    )
    events.write_text(line * 2 + "not json\n")
    common = ["--backend", "aws", "--stack", "pik-prod", "--region", REGION]
    out, err = io.StringIO(), io.StringIO()
    assert main(["ingest", str(events), "--json", *common], out, err) == 0, err.getvalue()
    summary = json.loads(out.getvalue())
    assert (summary["accepted"], summary["duplicate"], summary["rejected"]) == (1, 1, 1)
    out = io.StringIO()
    assert main(["events", "--entity", "user_123", "--start", "2025-12-28", "--end", "2025-12-29", "--json",
                 *common], out, err) == 0, err.getvalue()  # fmt: skip
    assert [i["status"] for i in json.loads(out.getvalue())["items"]] == ["ACCEPTED", "DUPLICATE"]
    out = io.StringIO()
    assert main(["events", "--status", "REJECTED", "--json", *common], out, err) == 0, err.getvalue()
    assert len(json.loads(out.getvalue())["items"]) == 1
    # An unknown stack is one line, exit 1.
    err = io.StringIO()
    unknown = ["--backend", "aws", "--stack", "nope", "--region", REGION]
    argv = ["events", "--entity", "x", "--start", "2025-12-28", "--end", "2025-12-29", *unknown]
    assert main(argv, io.StringIO(), err) == 1
    assert err.getvalue().count("\n") == 1 and "nope" in err.getvalue()


# -- operations: alarms, API throttling and access logs -----------------------------------------------------

NO_ACTIONS_WITHOUT_A_TOPIC = {
    "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
}
# Alarm -> (namespace, metric, dimensions, statistic), except the throttle alarms (metric math, below).
ALARMS: dict[str, tuple[str, str, list[dict[str, Any]], str]] = {
    "ReplayDeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": [res.REPLAY_DLQ.logical_id, "QueueName"]}}],
        "Maximum",
    ),
    "RollupDeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RollupDeadLetterQueue", "QueueName"]}}],
        "Maximum",
    ),
    "ProcessorErrorAlarm": (
        "PipelineInvestigationKit",
        "ProcessorErrorCount",
        [{"Name": "Function", "Value": "processor"}],
        "Sum",
    ),
    **{
        f"{name}ErrorAlarm": (
            "AWS/Lambda",
            "Errors",
            [{"Name": "FunctionName", "Value": {"Ref": name}}],
            "Sum",
        )
        for name in FUNCTIONS
    },
    "Api5xxAlarm": (
        "AWS/ApiGateway",
        "5XXError",
        [
            {"Name": "ApiName", "Value": {"Fn::Sub": "${AWS::StackName}-api"}},
            {"Name": "Stage", "Value": "v1"},
        ],
        "Sum",
    ),
}
THROTTLE_ALARMS = {f"{t.logical_id}ThrottleAlarm": t for t in res.TABLES}


def _alarm_props(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in _resources(template, "AWS::CloudWatch::Alarm").items()}


@pytest.mark.parametrize("which", ["sam", "translated"])
def test_each_alarm_watches_its_metric_and_notifies_the_optional_topic(
    sam: dict[str, Any], cfn: dict[str, Any], which: str
) -> None:
    alarms = _alarm_props(sam if which == "sam" else cfn)
    assert set(alarms) == {*ALARMS, *THROTTLE_ALARMS}
    for name, props in alarms.items():
        # Anything at all is worth a look: each of these counts something that should not happen.
        assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold"), name
        assert props["EvaluationPeriods"] == 1, name
        assert props["TreatMissingData"] == "notBreaching", name  # no traffic is not an incident
        assert props["AlarmActions"] == NO_ACTIONS_WITHOUT_A_TOPIC, name
        assert props["OKActions"] == NO_ACTIONS_WITHOUT_A_TOPIC, name
        assert props["AlarmDescription"].strip(), name
    for name, (namespace, metric, dimensions, statistic) in ALARMS.items():
        props = alarms[name]
        assert (props["Namespace"], props["MetricName"]) == (namespace, metric), name
        assert props["Dimensions"] == dimensions, name
        assert (props["Statistic"], props["Period"]) == (statistic, 300), name


def test_the_5xx_alarm_names_the_templates_api_and_stage(sam: dict[str, Any]) -> None:
    api = sam["Resources"]["Api"]["Properties"]
    dims = {d["Name"]: d["Value"] for d in _alarm_props(sam)["Api5xxAlarm"]["Dimensions"]}
    assert dims == {"ApiName": api["Name"], "Stage": api["StageName"]}


def test_throttle_alarms_sum_reads_and_writes_of_each_table_and_its_indexes(sam: dict[str, Any]) -> None:
    alarms = _alarm_props(sam)
    for name, spec in THROTTLE_ALARMS.items():
        queries = alarms[name]["Metrics"]
        (expression,) = [q for q in queries if "Expression" in q]
        stats = [q for q in queries if "MetricStat" in q]
        assert expression["ReturnData"] is True and all(q["ReturnData"] is False for q in stats)
        indexes = [
            g["IndexName"] for g in spec.create_table_kwargs("unused").get("GlobalSecondaryIndexes", [])
        ]
        watched = set()
        for query in stats:
            metric = query["MetricStat"]["Metric"]
            assert metric["Namespace"] == "AWS/DynamoDB"
            assert query["MetricStat"]["Stat"] == "Sum" and query["MetricStat"]["Period"] == 300
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert dims.pop("TableName") == {"Ref": spec.logical_id}, name
            watched.add((metric["MetricName"], dims.pop("GlobalSecondaryIndexName", None)))
            assert not dims
            assert f"FILL({query['Id']}, 0)" in expression["Expression"]  # every query is in the sum
        assert watched == {
            (metric, index)
            for metric in ("ReadThrottleEvents", "WriteThrottleEvents")
            for index in (None, *indexes)
        }, name


def test_the_processor_alarm_matches_the_metric_the_handler_emits(
    sam: dict[str, Any], tmp_path: Path
) -> None:
    # The processor runs with the template's environment and prints its EMF: the alarm must name exactly
    # that namespace, metric and dimension set, or it watches a metric nobody writes.
    from tests.handlers.emf_probe import dimension_sets, emf_by_function, run_handlers

    (doc,) = emf_by_function(run_handlers(tmp_path))["processor"]
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    (dimension_set,) = dimension_sets(doc)
    alarm = _alarm_props(sam)["ProcessorErrorAlarm"]
    assert alarm["Namespace"] == directive["Namespace"]
    assert alarm["MetricName"] in {m["Name"] for m in directive["Metrics"]}
    assert alarm["Dimensions"] == [{"Name": name, "Value": doc[name]} for name in dimension_set]


def test_operations_parameters_default_to_a_working_stack(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    # No topic: alarms without actions. No access log: it needs an account-wide role the stack cannot assume.
    assert params["AlarmTopicArn"]["Default"] == ""
    assert sam["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    assert params["ApiAccessLogs"]["Default"] == "false"
    assert sam["Conditions"]["ApiAccessLogsEnabled"] == {"Fn::Equals": [{"Ref": "ApiAccessLogs"}, "true"]}
    assert (params["ApiThrottlingBurstLimit"]["Default"], params["ApiThrottlingRateLimit"]["Default"]) == (
        200,
        100,
    )
    assert params["LogRetentionDays"]["Default"] == 90
    assert 90 in params["LogRetentionDays"]["AllowedValues"]


def test_tracing_is_a_parameter_of_the_functions_the_api_and_the_roles(
    sam: dict[str, Any], cfn: dict[str, Any]
) -> None:
    assert sam["Parameters"]["EnableTracing"]["Default"] == "false"
    assert sam["Conditions"]["TracingEnabled"] == {"Fn::Equals": [{"Ref": "EnableTracing"}, "true"]}
    functions = _resources(cfn, "AWS::Lambda::Function")
    assert len(functions) == len(FUNCTIONS)
    for name, function in functions.items():
        mode = function["Properties"]["TracingConfig"]["Mode"]
        assert mode == {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}, name
    (stage,) = _resources(cfn, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["TracingEnabled"] == {"Fn::If": ["TracingEnabled", True, False]}
    # The grant X-Ray needs exists only with the condition, and goes to every function's role (the rollup
    # function's only when it exists too).
    policies = _resources(sam, "AWS::IAM::Policy")
    assert {p["Condition"] for p in policies.values()} == {"TracingEnabled", "RollupsAndTracing"}
    roles = {r["Ref"] for p in policies.values() for r in p["Properties"]["Roles"]}
    assert roles == set(_resources(sam, "AWS::IAM::Role"))
    for policy in policies.values():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert set(statement["Action"]) == UNSCOPED_ACTIONS and statement["Resource"] == "*"


def test_api_stage_is_throttled_and_logs_access_as_json(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    (stage,) = _resources(cfn, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        }
    ]
    condition, access, absent = props["AccessLogSetting"]["Fn::If"]
    assert condition == "ApiAccessLogsEnabled" and absent == {"Ref": "AWS::NoValue"}
    assert access["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(access["Format"])  # one JSON object a line
    assert line["requestId"] == "$context.requestId" and line["status"] == "$context.status"
    assert line["responseLatency"] == "$context.responseLatency"
    assert all(isinstance(v, str) for v in line.values())
    group = sam["Resources"]["ApiAccessLogGroup"]
    assert group["Condition"] == "ApiAccessLogsEnabled"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    for name, log_group in _resources(sam, "AWS::Logs::LogGroup").items():
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_access_log_and_topic_parameters_deploy(aws: None, cfn: dict[str, Any]) -> None:
    _upload_code()
    topic = boto3.client("sns", region_name=REGION).create_topic(Name="pik-alarms")["TopicArn"]
    outputs = _create_stack(
        "pik-ops",
        _without_api(cfn),
        ApiAccessLogs="true",
        AlarmTopicArn=topic,
        LogRetentionDays="30",
        EnableTracing="true",
    )
    # With tracing, the stack holds the X-Ray grant (moto checks it creates; AWS checks what it grants).
    cfn_client = boto3.client("cloudformation", region_name=REGION)
    summaries = cfn_client.list_stack_resources(StackName="pik-ops")["StackResourceSummaries"]
    made = {r.get("LogicalResourceId") for r in summaries}
    assert "TracingPolicy" in made, sorted(str(m) for m in made)
    logs = boto3.client("logs", region_name=REGION)
    (group,) = logs.describe_log_groups(logGroupNamePrefix=outputs["ApiAccessLogGroupName"])["logGroups"]
    assert group["retentionInDays"] == 30
