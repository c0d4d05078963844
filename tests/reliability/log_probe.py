"""Runs the three Lambda handlers and the mutating ``pik`` commands with secrets planted in payloads, in the
API request's headers and in the AWS credentials, for ``test_security_logs`` to search everything written.

It runs as a child process (``python -m tests.reliability.log_probe WORKDIR``) so that every line any part
of the kit or its libraries writes is caught: the Powertools loggers (stdout), the standard library's
loggers (a root handler on stderr at ``LOG_LEVEL``, as the Lambda runtime installs one) and anything
printed; what the ``pik`` commands print for the user goes to the file ``PROBE_CLI_OUT`` instead. The
secrets come from the environment (``PROBE_*`` and the AWS credential variables).

It checks that each step did what it should (a probe whose ingest silently failed would prove nothing) and
exits 3 naming the step that did not; the last line it prints is a JSON summary of the steps run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

PAYLOAD_SECRET = os.environ.get("PROBE_PAYLOAD_SECRET", "")
HEADER_SECRET = os.environ.get("PROBE_HEADER_SECRET", "")
STEPS: list[str] = []


class ProbeFailed(Exception):
    pass


def check(ok: bool, step: str) -> None:
    if not ok:
        raise ProbeFailed(step)
    STEPS.append(step)


def events(entity: str, n: int, *, day: str = "2025-12-28") -> list[bytes]:
    """``n`` valid events whose payloads hold the secret (a field, a nested field and a list item)."""
    return [
        json.dumps(
            {
                "source": "probe",
                "event_type": "login",
                "entity_id": entity,
                "event_time": f"{day}T10:{i:02d}:00Z",
                "payload": {
                    "password": PAYLOAD_SECRET,
                    "nested": {"api_key": PAYLOAD_SECRET},
                    "tokens": [PAYLOAD_SECRET],
                    "n": i,
                },
            }
        ).encode()
        for i in range(n)
    ]


def rejected_bodies() -> list[bytes]:
    """Requests rejected for reasons of their own, each carrying the secret in its payload (or in place of
    one): a bad time, a payload that is a string, a wrong type beside a payload, invalid JSON."""
    base = {"source": "probe", "event_type": "login", "entity_id": "u-rejected"}
    return [
        json.dumps({**base, "event_time": "not a time", "payload": {"password": PAYLOAD_SECRET}}).encode(),
        json.dumps({**base, "event_time": "2025-12-28T10:00:00Z", "payload": PAYLOAD_SECRET}).encode(),
        json.dumps({**base, "event_time": 5, "payload": {"password": PAYLOAD_SECRET}}).encode(),
        json.dumps(
            {**base, "event_time": "2025-12-28T10:00:00Z", "payload": {"password": PAYLOAD_SECRET}}
        ).encode()[:-3],
        # The payload's object sent where the entity id belongs.
        json.dumps(
            {
                **base,
                "entity_id": {"password": PAYLOAD_SECRET},
                "event_time": "2025-12-28T10:00:00Z",
                "payload": {},
            }
        ).encode(),
    ]


def signed(event: dict[str, Any]) -> dict[str, Any]:
    """An API event as API Gateway passes on a SigV4-signed request: the caller's headers included."""
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIAPROBE/20251228/us-east-1/execute-api/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={HEADER_SECRET}"
    )
    for key in ("headers", "multiValueHeaders"):
        headers = event.get(key)
        if isinstance(headers, dict):
            multi = key == "multiValueHeaders"
            headers["Authorization"] = [auth] if multi else auth
            headers["X-Amz-Security-Token"] = [HEADER_SECRET] if multi else HEADER_SECRET
            headers["Cookie"] = [f"session={HEADER_SECRET}"] if multi else f"session={HEADER_SECRET}"
    identity = event.get("requestContext", {}).get("identity")
    if isinstance(identity, dict):
        identity["accessKey"] = "AKIAPROBE"
    return event


def run_handlers(ws_backend: Any, read_queue: Any) -> None:
    """Ingest (accepted, duplicate, rejected), replay (sent), processor (the replay's messages, and two
    malformed ones) through the Lambda handlers, on the backend ``common`` is configured with."""
    from backend.handlers import ingest, processor, replay
    from tests.handlers.support import replay_v1, sqs_event, sqs_record
    from tests.handlers.test_ingest_handler import FakeLambdaContext, http_v2_event, rest_v1_event

    ctx = FakeLambdaContext()
    name = ws_backend
    for body in events("u-handler", 3):
        response = ingest.handler(signed(rest_v1_event(body.decode())), ctx)
        check(response["statusCode"] == 200, f"{name}: ingest handler accepts")
    response = ingest.handler(signed(http_v2_event(events("u-handler", 1)[0].decode())), ctx)
    check(json.loads(response["body"])["status"] == "DUPLICATE", f"{name}: ingest handler duplicate")
    for body in rejected_bodies():
        response = ingest.handler(signed(rest_v1_event(body.decode())), ctx)
        check(response["statusCode"] == 400, f"{name}: ingest handler rejects")
    request = {
        "entity_id": "u-handler",
        "start_time": "2025-12-28T00:00:00Z",
        "end_time": "2025-12-29T00:00:00Z",
    }
    response = replay.handler(signed(replay_v1(json.dumps(request))), ctx)
    check(json.loads(response["body"]).get("sent") == 3, f"{name}: replay handler sends")
    bodies = read_queue()
    check(len(bodies) == 3, f"{name}: the replay's messages are on the queue")
    junk = [
        sqs_record(json.dumps({"payload": {"password": PAYLOAD_SECRET}})),
        sqs_record(f"not json {PAYLOAD_SECRET}"),
    ]
    answer = processor.handler(sqs_event([*(sqs_record(b) for b in bodies), *junk]), ctx)
    check(len(answer["batchItemFailures"]) == 2, f"{name}: processor handler fails only the malformed")


def run_cli(argv: list[str], expect: int, step: str) -> None:
    from pik_console.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    # What the command printed for the user goes to its own file (PROBE_CLI_OUT), apart from the logs.
    with open(os.environ["PROBE_CLI_OUT"], "a", encoding="utf-8") as fh:
        fh.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    check(code == expect, f"{step} (exit {code}: {err.getvalue().strip()[:200]})")


def cli_input(folder: Path, entity: str) -> str:
    path = folder / f"{entity}.jsonl"
    path.write_bytes(b"\n".join([*events(entity, 3), *rejected_bodies()]) + b"\n")
    return str(path)


METRICS_TOML = """
[[metrics]]
name = "passwords_seen"
kind = "distinct"
field = "password"
"""


def local(work: Path) -> None:
    from backend.adapters.local.store import LocalStore
    from backend.adapters.local.workspace import local_ports
    from backend.handlers import common
    from backend.kit import open_local
    from backend.settings import Settings

    ws = work / "ws"
    ws.mkdir()
    # A metric over a payload field: the processor reads the raw bytes, secret and all.
    (ws / "settings.toml").write_text(METRICS_TOML, encoding="utf-8")
    backend = open_local(ws)
    common.configure(backend, Settings(backend="local"))
    assert isinstance(backend.index, LocalStore)
    queue = local_ports(backend.index).queue

    def read_queue() -> list[str]:
        got = queue.receive(10, 60)
        queue.delete([m.receipt_handle for m in got])
        return [m.body for m in got]

    try:
        run_handlers("local", read_queue)
    finally:
        common.configure(None)
        backend.close()
    cli_ws = ["--workspace", str(work / "cli")]
    (work / "cli").mkdir()
    (work / "cli" / "settings.toml").write_text(METRICS_TOML, encoding="utf-8")
    run_cli(["ingest", cli_input(work, "u-cli"), *cli_ws], 0, "local: pik ingest")
    run_cli(["ingest", cli_input(work, "u-cli"), "--json", *cli_ws], 0, "local: pik ingest --json")
    scope = ["--entity", "u-cli", "--day", "2025-12-28"]
    run_cli(["replay", *scope, *cli_ws], 0, "local: pik replay (dry run)")
    run_cli(["replay", *scope, "--execute", *cli_ws], 0, "local: pik replay --execute")
    run_cli(["process", *cli_ws], 0, "local: pik process")
    run_cli(["process", "--json", *cli_ws], 0, "local: pik process --json")


def aws(work: Path) -> None:
    from backend.handlers import common
    from tests.aws_env import moto_backend
    from tests.handlers.support import ENV_NAMES

    store, settings, close = moto_backend()
    secrets = {k: os.environ[f"PROBE_{k}"] for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    try:
        # moto_backend set its own fake credentials; what the functions and commands run with are these.
        os.environ.update(secrets)
        for field, env in ENV_NAMES.items():
            value = getattr(settings, field)
            if value:
                os.environ[env] = value
        os.environ["AWS_DEFAULT_REGION"] = settings.region or "us-east-1"
        os.environ["PIK_BACKEND"] = "aws"
        common.configure(None)
        import boto3

        sqs = boto3.client("sqs", region_name=settings.region)

        def read_queue() -> list[str]:
            got = sqs.receive_message(QueueUrl=settings.replay_queue_url, MaxNumberOfMessages=10)
            messages = got.get("Messages", [])
            for m in messages:
                sqs.delete_message(QueueUrl=settings.replay_queue_url, ReceiptHandle=m["ReceiptHandle"])
            return [m["Body"] for m in messages]

        run_handlers("aws", read_queue)
        common.configure(None)
        aws_args = ["--backend", "aws"]
        run_cli(["ingest", cli_input(work, "u-aws-cli"), *aws_args], 0, "aws: pik ingest")
        scope = ["--entity", "u-aws-cli", "--day", "2025-12-28"]
        run_cli(["replay", *scope, "--execute", *aws_args], 0, "aws: pik replay --execute")
        # Nothing the kit stored may hold the credentials either (the raw bytes hold the payload secret).
        raw = store.get(
            next(
                iter(store.query_entity("u-aws-cli", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z").items)
            ).s3_key
        )
        check(raw is not None and PAYLOAD_SECRET.encode() in raw, "aws: the payload secret was stored")
    finally:
        common.configure(None)
        close()
        os.environ.update(secrets)


def main() -> int:
    work = Path(sys.argv[1])
    level = os.environ.get("LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(level)
    try:
        local(work)
        aws(work)
    except ProbeFailed as exc:
        print(f"PROBE STEP FAILED: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({"probe_steps": STEPS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
