"""What the replay and processor handler tests share: a local workspace filled through the ingest service,
API Gateway events for ``POST /replay``, and SQS events as Lambda delivers them to the processor."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import LocalPorts, local_ports
from backend.handlers import common
from backend.kit import Kit, open_local
from backend.services.ingest import IngestService, Received
from backend.settings import ENV_NAMES, Settings
from backend.times import fmt
from tests.conftest import make_event
from tests.handlers.test_ingest_handler import http_v2_event, rest_v1_event

DAY = datetime(2025, 12, 28, tzinfo=UTC)
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:pik-ReplayQueue-1XMPL2ABCDEF"

# The seed's replay curl example, byte for byte (docs "Replay Example").
SEED_REPLAY_BODY = """{
    "entity_id":"user_123",
    "start_time":"2025-12-28T00:00:00Z",
    "end_time":"2025-12-29T00:00:00Z",
    "limit":50,
    "include_duplicates":false
  }"""


class Workspace:
    """A local workspace that the handlers run on (``common.configure``), with its ports at hand."""

    def __init__(
        self, path: Path, *, read_only: bool = False, read_only_setting: bool = False, **settings: Any
    ) -> None:
        """``read_only`` opens the workspace read-only; ``read_only_setting`` opens it writable and runs the
        handlers with ``PIK_READ_ONLY``."""
        self.path = path
        self.backend: Kit = open_local(path, read_only=read_only)
        assert isinstance(self.backend.index, LocalStore)
        self.store: LocalStore = self.backend.index
        self.ports: LocalPorts = local_ports(self.store)
        self._settings = {"read_only": read_only_setting, **settings}
        self.configure()

    def configure(self, backend: Kit | None = None, **settings: Any) -> None:
        """Run the handlers on ``backend`` (default: this workspace) with these settings."""
        merged = {**self._settings, **settings}
        common.configure(backend or self.backend, Settings(backend="local", **merged))

    def settings_toml(self, text: str) -> None:
        (self.path / "settings.toml").write_text(text, encoding="utf-8")

    def add(
        self, n: int, entity: str = "user_1", day: datetime = DAY, *, start: int = 0, **fields: Any
    ) -> list[bytes]:
        """Ingest ``n`` events of ``entity``, a minute apart from ``day`` (minute ``start`` on); their
        payloads are ``{"i": minute, **payload}``."""
        extra = fields.pop("payload", {})
        bodies = [
            make_event(
                entity_id=entity,
                event_time=fmt(day + timedelta(minutes=i)),
                payload={"i": i, **extra},
                **fields,
            )
            for i in range(start, start + n)
        ]
        self.ingest(bodies)
        return bodies

    def ingest(self, bodies: Sequence[bytes]) -> None:
        results = IngestService(self.store, self.store).ingest_batch([Received(b) for b in bodies])
        assert {r.status.value for r in results} <= {"ACCEPTED", "DUPLICATE"}

    def queued(self) -> list[dict[str, Any]]:
        """Every message on the replay queue (received and deleted)."""
        out: list[dict[str, Any]] = []
        while batch := self.ports.queue.receive(10, 60):
            out += [json.loads(m.body) for m in batch]
            self.ports.queue.delete([m.receipt_handle for m in batch])
        return out

    def close(self) -> None:
        common.configure(None)
        self.backend.close()


# -- API Gateway events for POST /replay ----------------------------------------------------------------


def replay_v1(body: str | None, *, identity: dict[str, Any] | None = None, request_id: str = "rq-1") -> dict:
    """A REST API (v1) proxy event for ``POST /replay``; ``identity`` updates ``requestContext.identity``
    (what IAM auth fills in)."""
    event = rest_v1_event(body, request_id=request_id)
    event["resource"] = event["path"] = event["requestContext"]["resourcePath"] = "/replay"
    event["requestContext"]["path"] = "/prod/replay"
    event["requestContext"]["identity"].update(identity or {})
    return event


def replay_v2(body: str | None, *, authorizer: dict[str, Any] | None = None) -> dict:
    """An HTTP API (v2) proxy event for ``POST /replay``, with an optional ``requestContext.authorizer``."""
    event = http_v2_event(body)
    event["routeKey"] = event["requestContext"]["routeKey"] = "POST /replay"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/replay"
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    return event


# -- SQS events, as the event source mapping delivers them ------------------------------------------------


def sqs_record(
    body: str, *, message_id: str | None = None, receive_count: int = 1, receipt_handle: str | None = None
) -> dict[str, Any]:
    """One record of an SQS event (the shape in the Lambda developer guide, standard queue)."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": receipt_handle or "AQEB" + uuid.uuid4().hex * 4,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1766966401000",
            "SenderId": "AROAXMPL6K5DMMNAMNQ2:pik-ReplayFunction-1XMPL",
            "ApproximateFirstReceiveTimestamp": "1766966401005",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode("utf-8")).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sqs_event(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": list(records)}


def message(entity: str, event_time: str, *, replay_id: str = "rp-test", event_id: str = "e") -> str:
    """A replay message body in the shape replay sends (the seed's plus ``replay_id``)."""
    return json.dumps(
        {
            "event_id": event_id,
            "entity_id": entity,
            "event_time": event_time,
            "s3_bucket": "ws",
            "s3_key": f"raw/{event_id}.json",
            "replay_id": replay_id,
        }
    )


# -- on AWS (moto, in-process) ----------------------------------------------------------------------------


def missing_aws_ports(store: Any, settings: Any, *names: str) -> list[str]:
    """Which of the ports ``names`` :func:`backend.adapters.aws.ports.aws_ports` does not hand out yet."""
    from backend.adapters.aws.ports import aws_ports

    ports = aws_ports(store, settings)
    return [name for name in names if getattr(ports, name, None) is None]


def lambda_environment(monkeypatch: Any, settings: Any) -> None:
    """The function's environment as the template sets it (the seed's names), and no local overrides; the
    handlers then open the stack from it on first use, as in Lambda."""
    for name in (
        "PIK_BACKEND",
        "PIK_WORKSPACE",
        "DRY_RUN",
        "PIK_READ_ONLY",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for field, env in ENV_NAMES.items():
        value = getattr(settings, field)
        if value:
            monkeypatch.setenv(env, value)
        else:
            monkeypatch.delenv(env, raising=False)
    common.configure(None)


def sqs_records_from(messages: Sequence[dict[str, Any]], queue_arn: str, region: str) -> list[dict[str, Any]]:
    """What the event source mapping hands the function for messages it received from SQS
    (``ReceiveMessage`` with every attribute)."""
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        for m in messages
    ]


@contextlib.contextmanager
def captured_logs(logger: Any) -> Iterator[io.StringIO]:
    """What a handler's Powertools logger writes (it holds the stream it was created with)."""
    handler = logger.registered_handler
    assert hasattr(handler, "setStream")
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)
