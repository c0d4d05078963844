"""The fast path of ingest (orjson, accept-only) stores exactly what the validating path stores.

``prepare_fast`` answers only for plain events and leaves everything else to ``prepare``; these tests run
the same requests through both paths into two workspaces and compare every stored row of every table, and
check request by request that the fast path never answers where ``prepare`` would reject or differ.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import backend.services.ingest as ingest_module
from backend.adapters.local.store import LocalStore
from backend.services.ingest import IngestService, Received
from backend.services.ingest_validation import Invalid, Prepared, prepare, prepare_fast
from backend.times import FixedClock
from tests.reliability.hostile_cases import cases

ROOT = Path(__file__).resolve().parent.parent


def _datagen_lines(tmp_path: Path, n: int) -> list[bytes]:
    spec = importlib.util.spec_from_file_location("pik_bench_datagen", ROOT / "bench" / "datagen.py")
    assert spec is not None and spec.loader is not None
    datagen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = datagen  # its dataclasses look their module up
    spec.loader.exec_module(datagen)
    path = tmp_path / "events.jsonl"
    datagen.generate(path, n)
    return path.read_bytes().splitlines()


# Plain-looking requests at the fast path's edges: each must get prepare's answer (or be left to it).
TRICKY = [
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{"a":1}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{"a":1,"a":2}}',
    b'{"source":"s","source":"t","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z",'
    b'"payload":{}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{"x":'
    b'{"k":"v","k":"v"}}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z",'
    b'"payload":{"f":1e16,"g":-0.0,"h":1.0,"i":-0,"j":0.1,"k":1e-7,"l":123456789.123456789}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z",'
    b'"payload":{"big":18446744073709551615,"bigger":18446744073709551616,"neg":-9223372036854775809}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{"o":1e400}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{},'
    b'"idempotency_key":null}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{},'
    b'"idempotency_key":"a|b"}',
    b'{"source":"s","event_type":"t","entity_id":"e\x7f","event_time":"2025-12-28T23:59:59Z","payload":{}}',
    b'{"source":"s","event_type":"t","entity_id":"\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80","event_time":'
    b'"2025-12-28T23:59:59+14:00","payload":{"\xc3\xa9":"\xe2\x80\xa8","\xf0\x9f\x98\x80":["\x7f",1,true,null]}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28 23:59:59","payload":[1,2]}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59.1234567Z","payload":{}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2100-01-01T00:00:00Z","payload":{}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{}} \t',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{},"x":1}',
    b'{"source":"s","event_type":"t","entity_id":"","event_time":"2025-12-28T23:59:59Z","payload":{}}',
    b'{"source":"s/../x","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":{}}',
    b'{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z","payload":'
    + b"[" * 20
    + b"]" * 20
    + b"}",
    b'\xef\xbb\xbf{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T23:59:59Z",'
    b'"payload":{}}',
]


def _validating(body: bytes) -> Prepared | None:
    try:
        return prepare(body)
    except Invalid:
        return None


@pytest.mark.parametrize("body", TRICKY)
def test_fast_path_answers_as_prepare_does_or_not_at_all(body: bytes) -> None:
    fast = prepare_fast(body)
    assert fast is None or fast == _validating(body)


def test_fast_path_on_the_hostile_corpus() -> None:
    for case in cases():
        fast = prepare_fast(case.body)
        assert fast is None or fast == _validating(case.body), case.name


def test_fast_path_takes_the_plain_events(tmp_path: Path) -> None:
    lines = _datagen_lines(tmp_path, 2000)
    valid = [line for line in lines if _validating(line) is not None]
    taken = [line for line in valid if prepare_fast(line) is not None]
    # Otherwise the comparisons below would compare the validating path with itself.
    assert len(taken) == len(valid) > 1500


def _rows(workspace: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(workspace / "pik.sqlite3")
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema "
                "WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # In a stable order that needs no rowid (the overview's rollup tables are WITHOUT ROWID).
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def _ingest(
    workspace: Path, bodies: Sequence[bytes], fast: Callable[[bytes], Prepared | None], batch: int
) -> list[Any]:
    clock = FixedClock(datetime(2025, 12, 29, 1, 2, 3, 456789, tzinfo=UTC))
    store = LocalStore(workspace, clock=clock)
    original = ingest_module.prepare_fast
    ingest_module.prepare_fast = fast  # type: ignore[assignment]
    try:
        service = IngestService(store, store, clock, run_id="same")
        items = (Received(body, "file:same.jsonl", n) for n, body in enumerate(bodies, 1))
        return [r.model_dump() for results in service.ingest_stream(items, batch) for r in results]
    finally:
        ingest_module.prepare_fast = original
        store.close()


def _compare(tmp_path: Path, bodies: Sequence[bytes], batch: int) -> None:
    fast_results = _ingest(tmp_path / "fast", bodies, prepare_fast, batch)
    slow_results = _ingest(tmp_path / "validating", bodies, lambda body: None, batch)
    assert fast_results == slow_results
    fast_rows, slow_rows = _rows(tmp_path / "fast"), _rows(tmp_path / "validating")
    assert fast_rows.keys() == slow_rows.keys()
    for table in fast_rows:
        assert fast_rows[table] == slow_rows[table], table
    assert fast_rows["raw"] and fast_rows["events"] and fast_rows["rejections"]


def test_both_paths_store_the_same_rows_for_the_hostile_corpus(tmp_path: Path) -> None:
    bodies = [case.body for case in cases()] + TRICKY
    _compare(tmp_path, bodies + bodies[:50], batch=97)


def test_both_paths_store_the_same_rows_for_benchmark_data(tmp_path: Path) -> None:
    _compare(tmp_path, _datagen_lines(tmp_path, 3000), batch=500)
