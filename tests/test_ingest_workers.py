"""Ingest's quick ways store exactly what the plain way stores, and fail loudly, never partly.

The plain way: every request through the validating parser, in this process, raw bytes then index as two
separate stores (as S3 and DynamoDB are). The quick ways: the orjson fast path, the workspace taking raw
bytes and index rows in one transaction (``store_columns``), and batches prepared in worker processes.
Each is compared row for row, table by table, on the hostile corpus and on benchmark data.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import backend.services.ingest as ingest_module
from backend.adapters.local.store import LocalStore
from backend.services.ingest import IngestService, NumberedLines, PreparedBatch, Received, prepare_requests
from backend.services.ingest_workers import PrepareWorkers, WorkerFailed
from backend.times import FixedClock
from tests.reliability.hostile_cases import cases
from tests.test_ingest_fast_path import TRICKY, _datagen_lines, _rows

ROOT = Path(__file__).resolve().parent.parent
CLOCK_AT = datetime(2025, 12, 29, 1, 2, 3, 456789, tzinfo=UTC)


def _items(bodies: Sequence[bytes]) -> Iterator[Received]:
    return (Received(body, "file:same.jsonl", n) for n, body in enumerate(bodies, 1))


def _ingest(workspace: Path, bodies: Sequence[bytes], batch: int, *, quick: bool, workers: int) -> list[Any]:
    clock = FixedClock(CLOCK_AT)
    store = LocalStore(workspace, clock=clock)
    original = ingest_module.prepare_fast
    if not quick:
        ingest_module.prepare_fast = lambda body: None  # type: ignore[assignment]
    pool = PrepareWorkers.start(workers)  # forked here: the workers see the patched parser too
    try:
        if quick:
            service = IngestService(store, store, clock, run_id="same")
        else:
            service = IngestService(store.raw, store.index, clock, run_id="same")
        return [r.model_dump() for rs in service.ingest_stream(_items(bodies), batch, pool) for r in rs]
    finally:
        if pool is not None:
            pool.close()
        ingest_module.prepare_fast = original
        store.close()


def _compare(
    tmp_path: Path, bodies: Sequence[bytes], batch: int, workers: int, kinds: set[str] | None = None
) -> None:
    plain = _ingest(tmp_path / "plain", bodies, batch, quick=False, workers=0)
    quick = _ingest(tmp_path / "quick", bodies, batch, quick=True, workers=workers)
    assert quick == plain
    plain_rows, quick_rows = _rows(tmp_path / "plain"), _rows(tmp_path / "quick")
    assert quick_rows.keys() == plain_rows.keys()
    for table in plain_rows:
        assert quick_rows[table] == plain_rows[table], table
    # Otherwise the comparison would prove little.
    assert {r["status"] for r in plain} >= (kinds or {"ACCEPTED", "DUPLICATE", "REJECTED"})


@pytest.mark.parametrize("workers", [0, 2])
def test_the_quick_ways_store_the_same_rows_for_the_hostile_corpus(tmp_path: Path, workers: int) -> None:
    bodies = [case.body for case in cases()] + TRICKY
    _compare(tmp_path, bodies + bodies[:50], batch=97, workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_quick_ways_store_the_same_rows_for_benchmark_data(tmp_path: Path, workers: int) -> None:
    _compare(tmp_path, _datagen_lines(tmp_path, 3000), batch=500, workers=workers)


def test_the_first_chunk_is_prepared_in_halves_here_and_in_a_worker(tmp_path: Path) -> None:
    """The process that stores would wait for the first batch: it prepares the first chunk's second half
    while a worker prepares the first. Two batches, in order, the same as the chunk prepared whole."""
    bodies = _datagen_lines(tmp_path, 3000)
    clock = FixedClock(CLOCK_AT)
    # Stored: as the plain way stores the same requests in batches of 1200, 1200 and 600.
    plain = LocalStore(tmp_path / "plain", clock=clock)
    quick = LocalStore(tmp_path / "quick", clock=clock)
    items = list(_items(bodies))
    try:
        with PrepareWorkers.start(1) as pool:
            lines = [
                NumberedLines("file:same.jsonl", 1, bodies[:2400]),
                NumberedLines("file:same.jsonl", 2401, bodies[2400:]),
            ]
            done = list(IngestService(quick, quick, clock, run_id="same").resume_batches(lines, None, pool))
        list(
            IngestService(plain.raw, plain.index, clock, run_id="same").resume_batches(
                [items[:1200], items[1200:2400], items[2400:]], None
            )
        )
    finally:
        plain.close()
        quick.close()
    assert [d.committed.accepted + d.committed.duplicate + d.committed.rejected for d in done] == [
        1200,
        1200,
        600,
    ]
    assert _rows(tmp_path / "quick") == _rows(tmp_path / "plain")
    # Prepared: the halves are the chunk prepared whole.
    chunks = [NumberedLines("file:x", 1, bodies[:2400]), NumberedLines("file:x", 2401, bodies[2400:])]
    here: list[int] = []

    def prepare_here(chunk: Sequence[Received]) -> PreparedBatch:
        here.append(len(chunk))
        return prepare_requests(chunk, clock, "run")

    with PrepareWorkers.start(1) as pool:
        assert pool is not None
        out = list(pool.prepare(chunks, clock, "run", None, prepare_here))
    assert [len(chunk) for chunk, _ in out] == [1200, 1200, 600] and here == [1200]
    assert [r.line for chunk, _ in out for r in chunk] == list(range(1, 3001))
    whole = prepare_requests(chunks[0], clock, "run")
    halves = [batch for _, batch in out[:2]]
    assert [tuple(c) for c in whole.receipts] == [
        tuple(a + b) for a, b in zip(halves[0].receipts, halves[1].receipts, strict=True)
    ]
    assert whole.bodies == halves[0].bodies + halves[1].bodies


def test_a_key_holding_other_bytes_keeps_the_receipts_in_arrival_order(tmp_path: Path) -> None:
    """An idempotency-key retry with a new payload lands at a taken key: the batch goes the separate way,
    and its receipts are numbered in arrival order, as the plain way numbers them."""
    first = b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T10:00:00Z",'
    bodies = [
        first + b'"payload":{"v":1},"idempotency_key":"k"}',
        first + b'"payload":{"v":2},"idempotency_key":"k"}',  # same event id, other bytes
        first + b'"payload":{"v":1},"idempotency_key":"k"}',  # the first bytes again
    ]
    kinds = {"ACCEPTED", "DUPLICATE"}
    _compare(tmp_path / "one-batch", bodies + bodies, batch=10, workers=0, kinds=kinds)
    _compare(tmp_path / "across-batches", bodies + bodies, batch=2, workers=0, kinds=kinds)
    receipts = _rows(tmp_path / "one-batch" / "quick")["events"]
    assert [row[2] for row in receipts] == [0, 1, 2, 3, 4, 5]  # one event id, six receipts in order


def test_resuming_with_workers_skips_what_is_stored(tmp_path: Path) -> None:
    bodies = _datagen_lines(tmp_path, 600)
    store = LocalStore(tmp_path / "ws")
    try:
        list(IngestService(store, store).ingest_stream(_items(bodies[:250]), batch_size=100))
        with PrepareWorkers.start(2) as pool:
            resumed = list(IngestService(store, store).resume_stream(_items(bodies), store, 100, pool))
        assert sum(b.skipped for b in resumed) == 250
        assert sum(len(b.results) for b in resumed) == 350
        lines = [r.line for b in resumed for r in b.results]
        assert lines == list(range(251, 601))
    finally:
        store.close()


def test_a_worker_that_dies_is_a_clear_error_and_nothing_of_its_batch_is_stored(tmp_path: Path) -> None:
    bodies = _datagen_lines(tmp_path, 400)
    store = LocalStore(tmp_path / "ws")
    pool = PrepareWorkers.start(1)
    assert pool is not None
    try:
        stream = IngestService(store, store).ingest_stream(_items(bodies), batch_size=100, workers=pool)
        assert len(next(stream)) == 100
        for process in pool._processes:
            os.kill(process.pid, signal.SIGKILL)
            process.join(5)
        with pytest.raises(WorkerFailed, match="ended unexpectedly"):
            next(stream)
        assert store.stats().accepted + store.stats().duplicate <= 100
    finally:
        pool.close()
        store.close()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (reaped by init once its parent is gone).
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def _start_ingest(tmp_path: Path, lines: int) -> tuple[subprocess.Popen[str], list[int]]:
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(_datagen_lines(tmp_path, lines)) + b"\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pik_console.cli", "ingest", str(data), "--workspace", str(tmp_path / "ws"),
         "--workers", "2", "--batch-size", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(kids := _children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) == 2, "the two workers did not start"
    return proc, kids


def _wait_until_some_are_stored(proc: subprocess.Popen[str], workspace: Path) -> None:
    """Return once the ingest has committed a batch and is still running: a signal then lands mid-work,
    however fast or slow this machine is today."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the ingest ended before it could be interrupted: give it more lines"
        try:
            with closing(sqlite3.connect(f"file:{workspace / 'pik.sqlite3'}?mode=ro", uri=True)) as db:
                if db.execute("SELECT count(*) FROM raw").fetchone()[0] > 0:
                    return
        except sqlite3.OperationalError:
            pass  # the workspace is still being created
        time.sleep(0.02)
    raise AssertionError("no batch was stored within 60 s")


def test_ctrl_c_with_workers_prints_one_message_and_leaves_no_process(tmp_path: Path) -> None:
    proc, kids = _start_ingest(tmp_path, 60_000)
    _wait_until_some_are_stored(proc, tmp_path / "ws")
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends it to the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.count("pik ingest: interrupted") == 1 and "Traceback" not in err
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(k) for k in kids)
    # Running it again finishes the job: the counts are those of one uninterrupted run.
    again = subprocess.run(
        [sys.executable, "-m", "pik_console.cli", "ingest", str(tmp_path / "events.jsonl"), "--workspace",
         str(tmp_path / "ws"), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    store = LocalStore(tmp_path / "ws")
    try:
        stats = store.stats()
    finally:
        store.close()
    assert (stats.accepted, stats.duplicate, stats.rejected) == (53_400, 6_000, 600)


def test_workers_end_when_the_ingest_is_killed(tmp_path: Path) -> None:
    proc, kids = _start_ingest(tmp_path, 60_000)
    _wait_until_some_are_stored(proc, tmp_path / "ws")
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(k) for k in kids), "a worker outlived the killed ingest"
