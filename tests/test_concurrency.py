"""Several OS processes ingesting overlapping events into one workspace at the same time (invariant 2):
exactly one acceptance per event id, every receipt kept, and a sound database afterwards."""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import sqlite3
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import DB_NAME, LocalStore
from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received, prepare
from tests.conftest import make_event

PROCESSES = 4
BATCH = 5
DISTINCT = 60


def _events_for(worker: int) -> list[bytes]:
    """What one process sends: every shared event, a slice that overlaps its neighbour's, some resends,
    and its own bytes for a few shared ids (same event id, other bytes: receipt keys under contention)."""
    rng = random.Random(worker)
    shared = [make_event(entity_id=f"user_{i % 7}", payload={"i": i}) for i in range(20)]
    slice_ = [
        make_event(entity_id=f"user_{i % 7}", payload={"i": i})
        for i in range(20 + worker * 10, 20 + worker * 10 + 20)
        if i < DISTINCT
    ]
    divergent = [make_event(entity_id=f"user_{i % 7}", payload={"i": i}, sender=worker) for i in range(5)]
    bodies = shared + slice_ + divergent + rng.sample(shared + slice_, 10)
    rng.shuffle(bodies)
    return bodies


def _ingest_worker(ws: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        store = LocalStore(ws, create=False)
        try:
            service = IngestService(store, store)
            bodies = _events_for(worker)
            barrier.wait(timeout=60)
            answers: list[tuple[str, str]] = []
            for start in range(0, len(bodies), BATCH):
                for r in service.ingest_batch([Received(b) for b in bodies[start : start + BATCH]]):
                    answers.append((r.event_id or "", r.status.value))
        finally:
            store.close()
        results.put((worker, answers, None))
    except BaseException:
        results.put((worker, [], traceback.format_exc()))


@pytest.mark.slow
def test_concurrent_processes_accept_each_event_exactly_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    # The workspace exists before the race (concurrent *creation* is covered in test_local_store.py).
    LocalStore(ws).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ingest_worker, args=(str(ws), w, barrier, queue)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        reports = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [err for _, _, err in reports if err]
    assert not errors, errors[0]
    assert all(p.exitcode == 0 for p in procs)

    sent = [b for w in range(PROCESSES) for b in _events_for(w)]
    ids = {prepare(b).event_id for b in sent}
    assert len(ids) == DISTINCT
    answers = [a for _, worker_answers, _ in reports for a in worker_answers]
    assert len(answers) == len(sent)
    accepted_answers = Counter(eid for eid, status in answers if status == "ACCEPTED")
    assert set(accepted_answers) == ids and set(accepted_answers.values()) == {1}

    store = LocalStore(ws, create=False)
    try:
        stats = store.stats()
        assert (stats.accepted, stats.duplicate) == (DISTINCT, len(sent) - DISTINCT)
        total = 0
        for eid in ids:
            receipts = store.receipts(eid)
            assert [r.status for r in receipts].count(IngestStatus.ACCEPTED) == 1
            assert receipts[0].status is IngestStatus.ACCEPTED
            total += len(receipts)
            for r in receipts:
                stored = store.get(r.s3_key)
                assert stored is not None and hashlib.sha256(stored).hexdigest() == r.raw_sha
        assert total == len(sent)
    finally:
        store.close()
    conn = sqlite3.connect(ws / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
