"""Several OS processes running processors on the same windows while events keep arriving (invariant 5):
versions stay 1, 2, 3... with no gap and no overwrite, inputs only grow, and the replay queue hands each
message to one processor at a time."""

from __future__ import annotations

import json
import multiprocessing
import random
import sqlite3
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import DB_NAME, LocalStore
from backend.adapters.local.workspace import local_ports
from backend.model import MetricKind, MetricSpec
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService
from backend.times import fmt
from tests.conftest import make_event

PROCESSES = 4
ROUNDS = 12
ENTITIES = ["e0", "e1", "e2"]
DAYS = [datetime(2025, 12, 27, tzinfo=UTC), datetime(2025, 12, 28, tzinfo=UTC)]
STEPS = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")


def _event(entity: str, day: datetime, n: int, steps: int) -> bytes:
    return make_event(entity_id=entity, event_time=fmt(day + timedelta(minutes=n)), payload={"steps": steps})


def _message(entity: str, day: datetime) -> str:
    return json.dumps(
        {"entity_id": entity, "event_time": fmt(day + timedelta(hours=12)), "replay_id": "rp-c"}
    )


def _worker(ws: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        store = LocalStore(ws, create=False)
        try:
            ports = local_ports(store)
            ingest = IngestService(store, store)
            processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, [STEPS])
            rng = random.Random(worker)
            received = 0
            barrier.wait(timeout=60)
            for i in range(ROUNDS):
                if rng.random() < 0.6:  # a late event arrives
                    entity, day = rng.choice(ENTITIES), rng.choice(DAYS)
                    ingest.ingest_batch(
                        [Received(_event(entity, day, 100 + worker * ROUNDS + i, worker + i))]
                    )
                batch = ports.queue.receive(10, 60)
                received += len(batch)
                bodies = [m.body for m in batch] + [_message(rng.choice(ENTITIES), rng.choice(DAYS))]
                result = processor.process(bodies)
                assert result.failed == {}, result.failed
                ports.queue.delete([m.receipt_handle for m in batch])
        finally:
            store.close()
        results.put((worker, received, None))
    except BaseException:
        results.put((worker, 0, traceback.format_exc()))


@pytest.mark.slow
def test_concurrent_processors_keep_versions_contiguous(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    store = LocalStore(ws)
    ports = local_ports(store)
    ingest = IngestService(store, store)
    ingest.ingest_batch([Received(_event(e, d, n, n)) for e in ENTITIES for d in DAYS for n in range(5)])
    messages = [_message(e, d) for e in ENTITIES for d in DAYS] * 5
    for start in range(0, len(messages), 10):
        ports.queue.send_batch(messages[start : start + 10])
    store.close()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(ws), w, barrier, results)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [err for _, _, err in reports if err]
    assert not errors, errors[0]
    assert sum(received for _, received, _ in reports) == len(messages), "each message received once"

    store = LocalStore(ws, create=False)
    try:
        ports = local_ports(store)
        final = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, [STEPS])
        assert final.process([_message(e, d) for e in ENTITIES for d in DAYS]).failed == {}
        assert ports.queue.depth().visible == ports.queue.depth().in_flight == ports.queue.depth().dead == 0
        for entity in ENTITIES:
            for day in DAYS:
                d = day.date().isoformat()
                accepted = {
                    r.event_id
                    for r in store.query_entity(entity, d, fmt(day + timedelta(days=1)), limit=1000).items
                    if r.status.value == "ACCEPTED"
                }
                for metric in ("daily_event_count", "steps"):
                    versions = ports.aggregates.versions(entity, d, metric=metric, limit=1000).items
                    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
                    previous: set[str] = set()
                    for v in versions:
                        manifest = ports.aggregates.manifest(v.inputs_hash)
                        assert manifest is not None
                        ids = {e.event_id for e in manifest}
                        assert previous < ids or not previous, "inputs only grow, and each version adds some"
                        previous = ids
                    assert previous == accepted
    finally:
        store.close()
    conn = sqlite3.connect(ws / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
