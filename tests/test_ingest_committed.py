"""A committed batch told by counts and exceptions (``IngestService.store``, ``Committed``) says exactly
what the per-request results say; a prepared batch crosses processes as columns without the requests'
bytes; the workspace's column write (``LocalStore.store_columns``) answers the duplicates' positions and
refuses, recording nothing, a batch in which a key holds other bytes."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from backend.adapters.local.store import LocalStore
from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received, prepare_requests
from backend.services.ingest_batch import Committed
from backend.times import FixedClock
from tests.reliability.hostile_cases import cases
from tests.test_ingest_fast_path import TRICKY, _datagen_lines

CLOCK = FixedClock(datetime(2025, 12, 29, 1, 2, 3, 456789, tzinfo=UTC))
BASE = b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T10:00:00Z",'


def _items(bodies: Sequence[bytes], origin: str = "file:a.jsonl") -> list[Received]:
    return [Received(body, origin, n) for n, body in enumerate(bodies, 1)]


def _told(committed: Committed) -> tuple[Counter[str], list[tuple[int | None, str]], int]:
    return (
        Counter(
            {"ACCEPTED": committed.accepted, "DUPLICATE": committed.duplicate, "REJECTED": committed.rejected}
        ),
        committed.rejections(),
        committed.clock_skew,
    )


def test_counts_and_exceptions_say_what_the_results_say(tmp_path: Path) -> None:
    bodies = [case.body for case in cases()] + TRICKY + _datagen_lines(tmp_path, 600)
    bodies += bodies[::7]  # duplicates, within a batch and across batches
    store = LocalStore(tmp_path / "ws", clock=CLOCK)
    service = IngestService(store, store, CLOCK, run_id="r")
    try:
        totals: Counter[str] = Counter()
        for start in range(0, len(bodies), 113):
            committed = service.store(service.prepare_batch(_items(bodies[start : start + 113])))
            results = committed.results()
            counts, rejections, skewed = _told(committed)
            assert counts == Counter({s.value: 0 for s in IngestStatus}) + Counter(
                r.status.value for r in results
            )
            assert rejections == [(r.line, r.reason) for r in results if r.status is IngestStatus.REJECTED]
            assert skewed == sum(r.clock_skew for r in results)
            totals += counts
    finally:
        store.close()
    stats = LocalStore(tmp_path / "ws").index.stats()
    assert (stats.accepted, stats.duplicate, stats.rejected) == (
        totals["ACCEPTED"],
        totals["DUPLICATE"],
        totals["REJECTED"],
    )
    assert totals["ACCEPTED"] and totals["DUPLICATE"] and totals["REJECTED"]


def test_a_prepared_batch_crosses_processes_without_the_requests_bytes() -> None:
    bodies = [BASE + b'"payload":{"marker":"%d-unmistakable-bytes"}}' % n for n in range(50)] + [b"{"]
    batch = prepare_requests(_items(bodies), CLOCK, "r")
    wire = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"unmistakable-bytes" not in wire  # the sender has them: they are not sent back
    received = pickle.loads(wire)
    assert received.bodies == []
    received.attach(bodies)
    assert received.valid == batch.valid
    assert [i for i, _ in received.rejected] == [50]
    assert received.origins == {"file:a.jsonl": (1, 51)}


def test_resume_stream_without_a_ledger_ingests_every_line_again(tmp_path: Path) -> None:
    bodies = [BASE + b'"payload":{"v":%d}}' % n for n in range(10)]
    store = LocalStore(tmp_path / "ws", clock=CLOCK)
    try:
        first = list(IngestService(store, store, CLOCK).resume_stream(_items(bodies), store, 4))
        again = list(IngestService(store, store, CLOCK).resume_stream(_items(bodies), None, 4))
        resumed = list(IngestService(store, store, CLOCK).resume_stream(_items(bodies), store, 4))
    finally:
        store.close()
    assert [(b.committed.accepted, b.skipped) for b in first] == [(4, 0), (4, 0), (2, 0)]
    assert [(b.committed.duplicate, b.skipped) for b in again] == [(4, 0), (4, 0), (2, 0)]
    assert [(len(b.results), b.skipped) for b in resumed] == [(0, 4), (0, 4), (0, 2)]


def test_store_columns_answers_the_duplicates_positions(tmp_path: Path) -> None:
    a, b, c = (BASE + b'"payload":{"v":%d}}' % n for n in range(3))
    store = LocalStore(tmp_path / "ws", clock=CLOCK)
    try:
        one = prepare_requests(_items([a, b, a]), CLOCK, "r")
        assert store.store_columns(one.receipts, one.bodies, one.packed) == [2]
        two = prepare_requests(_items([c, b, c, a], "file:b.jsonl"), CLOCK, "r")
        assert store.store_columns(two.receipts, two.bodies, two.packed) == [1, 2, 3]
        stats = store.index.stats()
        assert (stats.accepted, stats.duplicate) == (3, 4)
    finally:
        store.close()


def test_store_columns_records_nothing_when_a_key_holds_other_bytes(tmp_path: Path) -> None:
    keyed = BASE + b'"payload":{"v":1},"idempotency_key":"k"}'
    changed = BASE + b'"payload":{"v":2},"idempotency_key":"k"}'  # same event id, other bytes
    fresh = BASE + b'"payload":{"v":3}}'
    store = LocalStore(tmp_path / "ws", clock=CLOCK)
    try:
        first = prepare_requests(_items([keyed]), CLOCK, "r")
        assert store.store_columns(first.receipts, first.bodies, first.packed) == []
        second = prepare_requests(_items([fresh, changed]), CLOCK, "r")
        assert store.store_columns(second.receipts, second.bodies, second.packed) is None
        assert store.index.stats().accepted == 1  # neither receipt of the refused batch is recorded
        # The service then takes the separate way: the changed bytes under their own receipt key.
        committed = IngestService(store, store, CLOCK).store(second)
        assert (committed.accepted, committed.duplicate) == (1, 1)
        assert committed.keys is not None and "/sha256=" in committed.keys[1]
        assert store.get(committed.keys[1]) == changed
    finally:
        store.close()


def test_a_batch_writes_one_row_per_insert_statement(tmp_path: Path) -> None:
    """A many-row INSERT in the batch's transaction spills SQLite's statement journal to a temporary file,
    and every later insert of the transaction pays for it (docs/benchmarks.md): names go in one row per
    statement, like the raw and index rows."""
    bodies = [
        b'{"source":"s%d","event_type":"t","entity_id":"entity-%d","event_time":"2025-12-28T10:00:00Z",'
        b'"payload":{"v":%d}}' % (n % 7, n, n)
        for n in range(600)
    ]
    store = LocalStore(tmp_path / "ws", clock=CLOCK)
    statements: list[str] = []
    try:
        service = IngestService(store, store, CLOCK)
        store.db.connection().set_trace_callback(statements.append)
        committed = service.store(service.prepare_batch(_items(bodies)))
    finally:
        store.close()
    assert committed.accepted == 600
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert any("INTO entities" in s for s in inserts) and any("INTO partitions" in s for s in inserts)
    assert not [s for s in inserts if "),(" in s.replace(" ", "")]
