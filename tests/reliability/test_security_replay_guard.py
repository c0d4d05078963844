"""Security: a replay size guard the API cannot slip past.

* The replay size guard: through the Lambda handler, only a JSON ``true`` force sends an over-guard replay
  (not "true", 1, null, [], a nested or misspelt flag, nor a body naming ``force`` twice).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.handlers import common
from backend.handlers import replay as replay_handler
from backend.kit import open_local
from backend.model import ReplayOutcome
from backend.services.ingest import IngestService, Received
from backend.settings import Settings
from tests.handlers.support import replay_v1, replay_v2
from tests.handlers.test_ingest_handler import FakeLambdaContext
from tests.reliability.security_support import WINDOW, event

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
    common.configure(backend, Settings(backend="local"))
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
