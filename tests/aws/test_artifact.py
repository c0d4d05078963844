"""What `make deploy-build` builds is what Lambda needs, and nothing more.

The artifact is built here with the project's own packaging step (``scripts/build_lambda.py``), twice:

- for the template's target (python3.12 on arm64, the deploy build): its wheels are checked and its size
  per function reported; they cannot be imported here (a cp312 aarch64 ``pydantic_core`` does not load into
  this interpreter);
- for the interpreter running the tests (same script, ``--python-version`` and ``--arch`` of this machine):
  every handler is imported from it in a fresh ``python -I -S`` whose ``sys.path`` is the code folder, the
  layer and the standard library, nothing else, and invoked on real API Gateway and SQS event shapes
  against a moto server.

Both layers are kept under ``build/lambda-test/`` and rebuilt only when the requirements or the target
change (pip's download cache makes a rebuild a few seconds). ``sam validate --lint`` and ``sam build`` run
when the SAM CLI is on PATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cfnlint.decode.decode import decode_str

from tests.handlers.support import SEED_REPLAY_BODY, replay_v1, sqs_records_from
from tests.handlers.test_ingest_handler import SEED_BODY, SEED_EVENT_ID, rest_v1_event

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "backend" / "template.yaml"
CACHE = ROOT / "build" / "lambda-test"
HANDLERS = ("ingest", "replay", "processor", "rollup")
UI = ("textual", "rich", "pygments", "pik_console")
PROJECT_FOLDERS = ("tests", "docs", "bench", "screenshots", "scripts", "pik_console")
MB = 1_000_000
# Unzipped, per function (code + the shared layer), leaving out boto3 and its dependencies, which the
# layer bundles on purpose (backend/requirements-lambda.txt says why).
BUDGET_WITHOUT_BOTO3 = 15 * MB
REGION = "us-east-1"


def _packaging() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_lambda", ROOT / "scripts" / "build_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_lambda", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


build_lambda = _packaging()


def _build(target: Any) -> Any:
    out = CACHE / f"python{target.python_version}-{target.arch}"
    return build_lambda.build(out, target, quiet=True)


@pytest.fixture(scope="module")
def deploy_artifact() -> Any:
    """The artifact as `make deploy-build` builds it: for the template's runtime and architecture."""
    return _build(build_lambda.Target.from_template())


@pytest.fixture(scope="module")
def local_artifact() -> Any:
    """The same, built for the interpreter running the tests, so that it can be imported here."""
    return _build(build_lambda.Target.running())


def _top_level(folder: Path) -> set[str]:
    return {p.name.split("-")[0].removesuffix(".py") for p in folder.iterdir()}


def _sam_template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    assert not errors, errors
    data: dict[str, Any] = json.loads(json.dumps(decoded))
    return data


# -- what goes in --------------------------------------------------------------------------------------


def test_lambda_requirements_are_pyprojects_minus_the_console() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # The console and the local workspace's compression (zstandard) are not deployed: no Lambda imports them.
    not_deployed = {"textual>=1.0", "zstandard>=0.22"}
    assert set(build_lambda.requirements("bundle")) == set(project["dependencies"]) - not_deployed
    assert "boto3>=1.35" not in build_lambda.requirements("runtime")


def test_the_layer_is_built_for_the_functions_runtime_and_architecture() -> None:
    sam = _sam_template()
    function = sam["Globals"]["Function"]
    target = build_lambda.Target.from_template()
    assert function["Runtime"] == f"python{target.python_version}"
    assert function["Architectures"] == [target.arch]
    assert function["Layers"] == [{"Ref": "DependenciesLayer"}]
    layer = sam["Resources"]["DependenciesLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["SkipBuild"] is True
    assert layer["Properties"]["CompatibleRuntimes"] == [function["Runtime"]]
    assert layer["Properties"]["CompatibleArchitectures"] == function["Architectures"]
    artifact = build_lambda.Artifact(build_lambda.DEFAULT_OUT)
    assert (TEMPLATE.parent / layer["Properties"]["ContentUri"]).resolve() == artifact.layer
    for name in ("IngestFunction", "ReplayFunction", "ProcessorFunction"):
        code_uri = sam["Resources"][name]["Properties"]["CodeUri"]
        assert (TEMPLATE.parent / code_uri).resolve() == artifact.code


def test_the_code_is_the_backend_package_alone(deploy_artifact: Any) -> None:
    assert {p.name for p in deploy_artifact.code.iterdir()} == {"backend"}
    files = [p.relative_to(deploy_artifact.code) for p in deploy_artifact.code.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".py" for p in files), [p for p in files if p.suffix != ".py"]
    for name in HANDLERS:
        assert (deploy_artifact.code / "backend" / "handlers" / f"{name}.py").is_file()


def test_the_deploy_layer_holds_wheels_for_the_target_and_no_ui(deploy_artifact: Any) -> None:
    target = build_lambda.Target.from_template()
    site = deploy_artifact.site
    top = _top_level(site)
    assert {"aws_lambda_powertools", "pydantic", "pydantic_core", "pydantic_settings", "boto3"} <= top
    assert not top & {*UI, *PROJECT_FOLDERS}, top & {*UI, *PROJECT_FOLDERS}
    # The one compiled package is the target's, not this machine's.
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[target.arch]
    (core,) = (site / "pydantic_core").glob("_pydantic_core*.so")
    assert f"cpython-{target.python_version.replace('.', '')}-{machine}-linux-gnu" in core.name
    assert not list(site.rglob("__pycache__")), "bytecode of the building interpreter went into the layer"


def test_size_per_function_and_in_total(deploy_artifact: Any, capsys: pytest.CaptureFixture[str]) -> None:
    size = build_lambda.sizes(deploy_artifact)
    # Three functions share one code zip and one layer: what is stored is code + layer, once.
    with capsys.disabled():
        print(
            f"\n[artifact] per function, unzipped: {size['function'] / MB:.1f} MB"
            f" ({size['function_without_boto3'] / MB:.1f} MB without boto3);"
            f" code {size['code'] / MB:.1f} MB, layer {size['layer'] / MB:.1f} MB"
            f" (boto3 stack {size['layer_boto3'] / MB:.1f} MB);"
            f" in total for 3 functions: {size['function'] / MB:.1f} MB (one code folder, one layer)"
        )
    assert size["function_without_boto3"] <= BUDGET_WITHOUT_BOTO3
    assert size["function"] < 250 * MB  # Lambda's limit for a function and its layers, unzipped


# -- it runs from the artifact alone ---------------------------------------------------------------------

# Run in `python -I -S`: no site-packages, no PYTHONPATH, no current folder; sys.path is the artifact's two
# folders and the standard library. Imports every handler named in argv[4] (a cold start), then reads
# [[handler, event], ...] on stdin and writes the answers and what it loaded to the file named by argv[3]
# (stdout carries the functions' JSON logs and EMF metrics).
CHILD = r"""
import importlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]

class Context:
    function_name = "pik-artifact"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pik-artifact"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/pik-artifact"
    log_stream_name = "artifact"
    def get_remaining_time_in_millis(self):
        return 30000

handlers = {n: importlib.import_module("backend.handlers." + n).handler for n in sys.argv[4].split(",")}
answers = [handlers[name](event, Context()) for name, event in json.load(sys.stdin)]
files = sorted({str(getattr(m, "__file__", None)) for m in list(sys.modules.values())} - {"None"})
with open(sys.argv[3], "w") as out:
    json.dump({"answers": answers, "modules": sorted(sys.modules), "files": files}, out)
"""


def _run_from_artifact(
    artifact: Any, calls: list[tuple[str, Any]], env: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    result = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-B",  # no bytecode written into the artifact
            "-I",
            "-S",
            "-c",
            CHILD,
            str(artifact.code),
            str(artifact.site),
            str(result),
            ",".join(HANDLERS),
        ],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def stack_env(moto_url: str) -> Iterator[dict[str, str]]:
    """The functions' environment for resources that `pik aws init` created on the moto server."""
    pik = Path(sys.executable).parent / "pik"
    base = {"PATH": os.environ.get("PATH", ""), "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    base |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [str(pik), "aws", "init", "--endpoint-url", moto_url, "--prefix", "artifact"],
        capture_output=True,
        text=True,
        env={**base, "HOME": os.environ.get("HOME", "/tmp")},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    env = dict(base)
    for line in done.stdout.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    assert "RAW_BUCKET" in env and "REPLAY_QUEUE_URL" in env, done.stdout
    # As the template sets them; AWS_ENDPOINT_URL points every client of the functions at moto.
    env |= {
        "AWS_ENDPOINT_URL": moto_url,
        "DRY_RUN": "false",
        "POWERTOOLS_SERVICE_NAME": "pipeline-investigation-kit",
        "POWERTOOLS_METRICS_NAMESPACE": "PipelineInvestigationKit",
    }
    yield env


def _client(service: str, env: dict[str, str]) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def test_handlers_import_from_the_artifact_alone(local_artifact: Any, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "AWS_REGION": REGION}
    loaded = _run_from_artifact(local_artifact, [], env, tmp_path)
    assert loaded["answers"] == []
    assert {f"backend.handlers.{n}" for n in HANDLERS} <= set(loaded["modules"])
    assert not [m for m in loaded["modules"] if m.split(".")[0] in UI]
    outside = [
        f
        for f in loaded["files"]
        if not f.startswith((str(local_artifact.code), str(local_artifact.site), sys.base_prefix))
        or "site-packages" in f
    ]
    assert not outside, outside


def test_handlers_from_the_artifact_answer_on_moto(
    local_artifact: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    replay = json.loads(SEED_REPLAY_BODY)
    calls = [
        ("ingest", rest_v1_event(SEED_BODY)),
        ("ingest", rest_v1_event(SEED_BODY, request_id="retry")),
        ("replay", replay_v1(json.dumps({**replay, "dry_run": True}))),
        ("replay", replay_v1(json.dumps(replay), request_id="rq-2")),
    ]
    loaded = _run_from_artifact(local_artifact, calls, stack_env, tmp_path)
    # The layer's boto3 (bundled on purpose), not this environment's.
    assert any(f.startswith(str(local_artifact.site / "botocore")) for f in loaded["files"])
    assert not [f for f in loaded["files"] if "site-packages" in f]
    answers = loaded["answers"]
    statuses = [(a["statusCode"], json.loads(a["body"])) for a in answers]
    assert [code for code, _ in statuses] == [200, 200, 200, 200], statuses
    assert statuses[0][1]["event_id"] == SEED_EVENT_ID
    assert [statuses[0][1]["status"], statuses[1][1]["status"]] == ["ACCEPTED", "DUPLICATE"]
    assert statuses[2][1]["sent"] == 0
    assert statuses[3][1]["sent"] == 1

    # The processor, on what the event source mapping would hand it from the replay queue.
    sqs = _client("sqs", stack_env)
    queue_url = stack_env["REPLAY_QUEUE_URL"]
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    event = {"Records": sqs_records_from(messages, arn, REGION)}
    (answer,) = _run_from_artifact(local_artifact, [("processor", event)], stack_env, tmp_path)["answers"]
    assert answer == {"batchItemFailures": []}
    dynamodb = _client("dynamodb", stack_env)
    assert dynamodb.scan(TableName=stack_env["AGG_TABLE"], Select="COUNT")["Count"] >= 1


# -- the SAM CLI, when it is installed ---------------------------------------------------------------------

SAM = shutil.which("sam")
needs_sam = pytest.mark.skipif(
    SAM is None, reason="the AWS SAM CLI is not on PATH (pip install aws-sam-cli, see docs/aws.md)"
)


def _sam(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert SAM
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION}
    return subprocess.run([SAM, *args], cwd=cwd, capture_output=True, text=True, env=env, check=False)


@needs_sam
def test_sam_validate_lint() -> None:
    done = _sam("validate", "--lint", "--template-file", str(TEMPLATE), "--region", REGION)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_sam
def test_sam_build_keeps_the_built_folders(deploy_artifact: Any, tmp_path: Path) -> None:
    # No container and no python3.12 needed: the functions and the layer are built already (SkipBuild),
    # so `sam build` only writes a template that points at them.
    built = tmp_path / "sam"
    done = _sam("build", "--template-file", str(TEMPLATE), "--build-dir", str(built))
    assert done.returncode == 0, done.stdout + done.stderr
    decoded, errors = decode_str((built / "template.yaml").read_text(encoding="utf-8"))
    assert not errors
    resources = json.loads(json.dumps(decoded))["Resources"]
    deploy = build_lambda.Artifact(build_lambda.DEFAULT_OUT)
    assert (built / resources["DependenciesLayer"]["Properties"]["ContentUri"]).resolve() == deploy.layer
    for name in ("IngestFunction", "ReplayFunction", "ProcessorFunction"):
        assert (built / resources[name]["Properties"]["CodeUri"]).resolve() == deploy.code
