"""Invariant 4 as a property: whatever the index holds, the request and the queue's failures, a dry run
sends nothing, and a replay sends exactly what its plan lists, each message at most once, with
``sent + failed == would_send``. The expected messages come from an independent oracle over the
EventIndex queries and the raw store, not from the service's own scan."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.errors import StoreError
from backend.model import IngestStatus, ReplayRequest
from backend.ports import SendFailure
from backend.services.ingest import IngestService, Received
from backend.services.replay import ReplayService
from tests.conftest import make_event
from tests.contract.test_event_index import rec

events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # entity
        st.integers(0, 20),  # minute of 2025-12-28T10:..
        st.integers(0, 2),  # payload variant
        st.integers(0, 2),  # extra identical receipts (duplicates)
        st.sampled_from(["heartbeat", "click"]),
    ),
    max_size=30,
)
lost = st.integers(0, 3)  # index records whose raw bytes are missing
requests = st.fixed_dictionaries(
    {
        "entity_id": st.sampled_from(["a", "b"]),
        "limit": st.integers(1, 40),
        "include_duplicates": st.booleans(),
        "status": st.sampled_from([None, IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]),
        "event_type": st.sampled_from([None, "heartbeat"]),
    }
)
call_outcome = st.one_of(
    st.none(),
    st.just("down"),
    st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=4),  # refused entries, sender fault
)


class FaultyQueue:
    def __init__(self, inner: Any, plan: Sequence[Any]) -> None:
        self.inner = inner
        self.plan = list(plan)
        self.max_receives = inner.max_receives

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        assert 1 <= len(bodies) <= 10
        what = self.plan.pop(0) if self.plan else None
        if what == "down":
            raise StoreError("down")
        refused = {i: fault for i, fault in (what or []) if i < len(bodies)}
        self.inner.send_batch([b for i, b in enumerate(bodies) if i not in refused])
        return [SendFailure(i, "X", "refused", fault) for i, fault in sorted(refused.items())]


def _oracle(store: LocalStore, request: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(event_id, receipt or None) of the messages the request must send, in order."""
    out: list[tuple[str, str | None]] = []
    after = None
    while True:
        page = store.query_entity(
            request["entity_id"], "2025-12-28T00:00:00.000Z", "2025-12-29T00:00:00.000Z", limit=7, after=after
        )
        for r in page.items:
            accepted = r.status is IngestStatus.ACCEPTED
            if request["status"] is IngestStatus.ACCEPTED and not accepted:
                continue
            if request["status"] is IngestStatus.DUPLICATE and accepted:
                continue
            if request["event_type"] and r.event_type != request["event_type"]:
                continue
            if not accepted and not request["include_duplicates"]:
                continue
            if len(out) >= request["limit"]:
                continue
            if store.get(r.s3_key) is None:
                continue
            out.append((r.event_id, None if accepted else r.receipt))
        if page.next_cursor is None:
            return out
        after = page.next_cursor


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events, lost=lost, request=requests, faults=st.lists(call_outcome, max_size=8))
def test_a_replay_sends_exactly_its_plan(
    events: list[Any], lost: int, request: dict[str, Any], faults: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "ws")
        try:
            ports = local_ports(store)
            bodies = []
            for entity, minute, variant, copies, event_type in events:
                body = make_event(
                    entity_id=entity,
                    event_type=event_type,
                    event_time=f"2025-12-28T10:{minute:02d}:00Z",
                    payload={"v": variant},
                )
                bodies += [body] * (1 + copies)
            IngestService(store, store).ingest_batch([Received(b) for b in bodies])
            store.record(
                [
                    rec(entity="a", event_time=f"2025-12-28T11:0{i}:00.000Z", tag=f"lost{i}")
                    for i in range(lost)
                ]
            )
            service = ReplayService(
                ports.investigate, ports.catalog, ports.audit, FaultyQueue(ports.queue, faults),
                bucket="b", confirm_above=10_000, retries=2, sleep=lambda s: None,
            )  # fmt: skip
            replay = ReplayRequest(start_time="2025-12-28", end_time="2025-12-29", **request)
            expected = _oracle(store, request)

            plan = service.plan(replay, actor="t")
            assert ports.queue.depth().visible == 0, "a dry run sends nothing"
            s = plan.skipped
            assert plan.matched == plan.scanned - s.filtered
            assert plan.would_send + s.duplicate + s.missing_raw + s.over_limit == plan.matched
            assert plan.would_send == len(expected) <= request["limit"]

            result = service.execute(replay, actor="t", expected_fingerprint=plan.fingerprint)
            assert result.sent + result.failed == result.would_send == len(expected)
            delivered = []
            while batch := ports.queue.receive(10, 60):
                delivered += [json.loads(m.body) for m in batch]
                ports.queue.delete([m.receipt_handle for m in batch])
            assert len(delivered) == result.sent
            assert all(m["replay_id"] == result.replay_id for m in delivered)
            got = [(m["event_id"], m.get("receipt")) for m in delivered]
            assert len(set(got)) == len(got), "no message is sent twice"
            assert set(got) <= set(expected), "nothing outside the plan is sent"
            if result.failed == 0:
                assert sorted(got, key=expected.index) == expected
            assert ports.audit.get(result.replay_id) == result
        finally:
            store.close()
