"""Contract of the replay ports: :class:`RawCatalog` (raw bytes in bulk), :class:`ReplayQueue` (SQS
semantics: batches of 10, visibility, receive counts, dead letters) and :class:`AuditLog` (written once,
finished once, newest first)."""

from __future__ import annotations

from typing import Any

import pytest

from backend.errors import InvalidRequest
from backend.model import ReplayAudit, ReplayOutcome, ReplayRequest, ReplaySkips
from backend.ports import QUEUE_BATCH, RawObject
from tests.conftest import Adapter
from tests.contract.test_event_index import collect, sha


def _need(adapter: Adapter, name: str) -> Any:
    port = getattr(adapter, name)
    if port is None:
        pytest.skip(f"the {adapter.name} adapter has no {name} port yet")
    return port


# -- RawCatalog -------------------------------------------------------------------------------------------


def test_catalog_says_which_keys_are_missing_and_reads_many(adapter: Adapter) -> None:
    catalog = _need(adapter, "catalog")
    objects = [RawObject(f"raw/k{i}.json", f"body {i}".encode(), sha(f"body {i}")) for i in range(5)]
    adapter.raw.put_new(objects)
    keys = [o.key for o in objects]
    assert catalog.missing(keys) == set()
    assert catalog.missing([*keys, "raw/none.json", "raw/none.json"]) == {"raw/none.json"}
    assert catalog.missing([]) == set()
    got = catalog.get_many([keys[0], keys[3], "raw/none.json", keys[0]])
    assert got == {keys[0]: b"body 0", keys[3]: b"body 3"}
    many = [RawObject(f"raw/many/{i}.json", b"x", sha("x")) for i in range(450)]
    adapter.raw.put_new(many)
    assert catalog.missing([o.key for o in many]) == set()


# -- ReplayQueue ------------------------------------------------------------------------------------------


def test_a_batch_holds_at_most_ten_messages(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    with pytest.raises(InvalidRequest):
        queue.send_batch([f"m{i}" for i in range(QUEUE_BATCH + 1)])
    assert queue.send_batch([f"m{i}" for i in range(QUEUE_BATCH)]) == []
    assert queue.depth().visible == QUEUE_BATCH


def test_an_entry_the_queue_cannot_take_is_reported_not_raised(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    failures = queue.send_batch(["ok", "", "also ok"])
    assert [f.index for f in failures] == [1]
    assert failures[0].sender_fault
    assert sorted(m.body for m in queue.receive(10, 60)) == ["also ok", "ok"]


def test_a_received_message_is_hidden_until_deleted_or_released(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    queue.send_batch(["a", "b", "c"])
    first = queue.receive(2, 60)
    assert len(first) == 2 and all(m.receive_count == 1 for m in first)
    rest = queue.receive(10, 60)
    assert [m.body for m in rest] == sorted({"a", "b", "c"} - {m.body for m in first})
    assert queue.receive(10, 60) == []
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.dead) == (0, 3, 0)
    queue.delete([first[0].receipt_handle])
    queue.release([first[1].receipt_handle])
    again = queue.receive(10, 60)
    assert [(m.body, m.receive_count) for m in again] == [(first[1].body, 2)]
    assert again[0].message_id == first[1].message_id
    assert again[0].receipt_handle != first[1].receipt_handle
    queue.delete([again[0].receipt_handle, rest[0].receipt_handle])
    assert queue.depth().in_flight == 0 and queue.depth().visible == 0


def test_each_message_is_received_once_while_hidden(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    bodies = [f"m{i}" for i in range(25)]
    for start in range(0, 25, 10):
        queue.send_batch(bodies[start : start + 10])
    seen: list[str] = []
    while batch := queue.receive(10, 60):
        seen += [m.body for m in batch]
    assert sorted(seen) == sorted(bodies)


def test_a_message_received_max_receives_times_moves_to_the_dead_letter_queue(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    queue.send_batch(["poison", "fine"])
    for attempt in range(1, queue.max_receives + 1):
        got = {m.body: m for m in queue.receive(10, 60)}
        assert got["poison"].receive_count == attempt
        queue.release([got["poison"].receipt_handle])
        if "fine" in got:
            queue.delete([got["fine"].receipt_handle])
    assert queue.receive(10, 60) == []
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.dead) == (0, 0, 1)
    [dead] = queue.dead_letters().items
    assert dead.body == "poison" and dead.receive_count == queue.max_receives
    assert queue.dead_letters().items == [dead], "reading the dead letters does not consume them"


def test_dead_letters_are_paged(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    queue.send_batch([f"d{i}" for i in range(5)])
    for _ in range(queue.max_receives):
        queue.release([m.receipt_handle for m in queue.receive(10, 60)])
    assert queue.receive(10, 60) == []
    letters = collect(queue.dead_letters, 2)
    assert sorted(d.body for d in letters) == [f"d{i}" for i in range(5)]
    with pytest.raises(InvalidRequest):
        queue.dead_letters(after="garbage")


def test_receive_bounds(adapter: Adapter) -> None:
    queue = _need(adapter, "queue")
    with pytest.raises(InvalidRequest):
        queue.receive(11, 30)
    with pytest.raises(InvalidRequest):
        queue.receive(0, 30)
    assert queue.receive(10, 30) == []
    queue.delete([])
    queue.release([])


# -- AuditLog ---------------------------------------------------------------------------------------------


def _record(replay_id: str, started: str, outcome: ReplayOutcome = ReplayOutcome.RUNNING) -> ReplayAudit:
    return ReplayAudit(
        replay_id=replay_id,
        outcome=outcome,
        dry_run=outcome is ReplayOutcome.DRY_RUN,
        actor="alice",
        started_at=started,
        request=ReplayRequest(
            entity_id="user_1", start_time="2025-12-28T00:00:00.000Z", end_time="2025-12-29T00:00:00.000Z"
        ),
        scanned=12,
        matched=10,
        would_send=8,
        skipped=ReplaySkips(duplicate=2),
        entities=1,
        windows=1,
        fingerprint="f" * 64,
    )


def test_an_audit_record_reads_back_as_written(adapter: Adapter) -> None:
    audit = _need(adapter, "audit")
    record = _record("rp-1", "2025-12-28T10:00:00.000Z", ReplayOutcome.DRY_RUN)
    audit.begin(record)
    assert audit.get("rp-1") == record
    assert audit.get("rp-none") is None
    with pytest.raises(InvalidRequest):
        audit.begin(record.model_copy(update={"actor": "mallory"}))
    assert audit.get("rp-1") == record


def test_a_running_replay_is_finished_once(adapter: Adapter) -> None:
    audit = _need(adapter, "audit")
    running = _record("rp-2", "2025-12-28T10:00:00.000Z")
    audit.begin(running)
    done = running.model_copy(
        update={"outcome": ReplayOutcome.SENT, "sent": 8, "finished_at": "2025-12-28T10:00:01.000Z"}
    )
    audit.finish(done)
    assert audit.get("rp-2") == done
    with pytest.raises(InvalidRequest):
        audit.finish(done.model_copy(update={"sent": 0, "outcome": ReplayOutcome.FAILED}))
    assert audit.get("rp-2") == done
    with pytest.raises(InvalidRequest):
        audit.finish(done.model_copy(update={"replay_id": "rp-unknown"}))
    dry = _record("rp-3", "2025-12-28T10:00:00.000Z", ReplayOutcome.DRY_RUN)
    audit.begin(dry)
    with pytest.raises(InvalidRequest):
        audit.finish(dry.model_copy(update={"outcome": ReplayOutcome.SENT}))


def test_audit_records_are_listed_newest_first(adapter: Adapter) -> None:
    audit = _need(adapter, "audit")
    for i, started in enumerate(
        ["2025-12-28T10:00:00.000Z", "2025-12-28T12:00:00.000Z", "2025-12-28T11:00:00.000Z"]
    ):
        audit.begin(_record(f"rp-{i}", started, ReplayOutcome.DRY_RUN))
    audit.begin(_record("rp-3", "2025-12-28T12:00:00.000Z", ReplayOutcome.DRY_RUN))
    listed = collect(audit.query, 2)
    assert [r.replay_id for r in listed] == ["rp-3", "rp-1", "rp-2", "rp-0"]
