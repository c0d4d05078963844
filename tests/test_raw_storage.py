"""How the workspace keeps raw bytes (schema v6): identity keys as (partition, event id), the bytes
compressed with a dictionary trained on the workspace's own rows, and every byte given back as received."""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.local import raw_codec
from backend.adapters.local.store import DB_NAME, LocalStore
from backend.identity import raw_key, receipt_key
from backend.ports import RawObject, RawPutStatus
from backend.services.ingest import IngestService, Received
from backend.services.ingest_workers import PrepareWorkers
from backend.times import FixedClock
from tests.test_ingest_fast_path import _datagen_lines

NOW = datetime(2025, 12, 29, 1, 2, 3, tzinfo=UTC)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return _datagen_lines(tmp_path_factory.mktemp("data"), 1600)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> Path:
    """A workspace that ingested enough events to train its dictionary."""
    ws = tmp_path_factory.mktemp("compressed") / "ws"
    store = LocalStore(ws, clock=FixedClock(NOW))
    try:
        service = IngestService(store, store, FixedClock(NOW))
        items = (Received(b, "file:events.jsonl", n) for n, b in enumerate(lines, 1))
        for _ in service.ingest_stream(items, batch_size=400):
            pass
    finally:
        store.close()
    return ws


def test_once_trained_the_dictionary_compresses_rows_and_every_byte_reads_back(
    compressed: Path, lines: list[bytes]
) -> None:
    conn = sqlite3.connect(compressed / DB_NAME)
    try:
        assert conn.execute("SELECT count(*) FROM raw_dictionaries").fetchone()[0] == 1
        by_codec = dict(conn.execute("SELECT codec, count(*) FROM raw GROUP BY codec").fetchall())
        stored, received = conn.execute("SELECT sum(length(data)), count(*) FROM raw").fetchone()
    finally:
        conn.close()
    # The first two batches (about 700 rows) came before the dictionary: kept as received. Every later
    # one is compressed (a row is kept as received only where compressing would not make it smaller).
    assert by_codec[1] > 700 and by_codec[1] + by_codec.get(0, 0) == received
    store = LocalStore(compressed, create=False)
    try:
        service = IngestService(store, store)
        checked = 0
        for n, line in enumerate(lines, 1):
            result = store.delivered("file:events.jsonl", n, n)
            if not result:
                continue  # a rejected line's bytes are in the quarantine, not the raw table
            prepared = service.prepare_batch([Received(line)])
            if prepared.valid:
                key = prepared.valid[0][2].key
                assert store.get(key) == line
                assert store.sha256(key) == _sha(line)
                checked += 1
        assert checked > 1400
    finally:
        store.close()
    assert stored < sum(map(len, lines)) * 0.6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=3000) | st.text(max_size=400).map(str.encode),
    event_id=st.binary(min_size=32, max_size=32),
    identity=st.booleans(),
)
def test_any_bytes_round_trip_under_any_key(
    compressed: Path, data: bytes, event_id: bytes, identity: bool
) -> None:
    """Whatever the bytes (empty, random, text that the dictionary knows), ``get`` gives them back exactly,
    whether they were compressed or not, under an identity key or any other key."""
    eid = event_id.hex()
    sha = _sha(data)
    key = (
        raw_key("web", "click", "2025-12-03", eid)
        if identity
        else receipt_key("web", "c", "2025-12-03", eid, sha)
    )
    store = LocalStore(compressed, create=False)
    try:
        first = store.put_new([RawObject(key, data, sha)])[0]
        if first.status is RawPutStatus.CREATED:
            assert store.get(key) == data
        again = store.put_new([RawObject(key, data + b"x", _sha(data + b"x"))])[0]
        assert again.status is RawPutStatus.EXISTS
        assert again.stored_sha256 == store.sha256(key) == _sha(store.get(key) or b"")
    finally:
        store.close()


def test_event_ids_that_share_their_first_bytes_are_two_keys(tmp_path: Path) -> None:
    """The identity index holds 8 bytes of the event id: two ids alike in those are still two keys."""
    a = "ab" * 8 + "00" * 24
    b = "ab" * 8 + "11" * 24
    keys = [raw_key("s", "t", "2025-12-28", e) for e in (a, b)]
    store = LocalStore(tmp_path / "ws")
    try:
        puts = store.put_new([RawObject(k, k.encode(), _sha(k.encode())) for k in keys])
        assert [p.status for p in puts] == [RawPutStatus.CREATED] * 2
        assert [store.get(k) for k in keys] == [k.encode() for k in keys]
        again = store.put_new([RawObject(keys[1], b"other", _sha(b"other"))])[0]
        assert (again.status, again.stored_sha256) == (RawPutStatus.EXISTS, _sha(keys[1].encode()))
        assert store.get(raw_key("s", "t", "2025-12-28", "ab" * 8 + "22" * 24)) is None
    finally:
        store.close()


@pytest.mark.parametrize("recursive_triggers", [True, False], ids=["recursive", "plain"])
def test_a_dictionary_cannot_be_changed_or_removed_from_any_connection(
    compressed: Path, recursive_triggers: bool
) -> None:
    """Rows compressed with a dictionary are readable only with it: it is as immutable as they are."""
    conn = sqlite3.connect(compressed / DB_NAME, isolation_level=None)
    try:
        if recursive_triggers:
            conn.execute("PRAGMA recursive_triggers = ON")
        before = conn.execute("SELECT * FROM raw_dictionaries").fetchall()
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE raw_dictionaries SET data = x'00'")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM raw_dictionaries")
        conn.execute("INSERT OR REPLACE INTO raw_dictionaries (id, created_ms, data) VALUES (1, 0, x'00')")
        assert conn.execute("SELECT * FROM raw_dictionaries").fetchall() == before
    finally:
        conn.close()


def test_a_packer_travels_to_a_worker_as_its_dictionary(compressed: Path) -> None:
    store = LocalStore(compressed, create=False)
    try:
        packer = store.raw_packer()
        assert packer is not None
        copy = pickle.loads(pickle.dumps(packer))
        body = b'{"source":"web","event_type":"click","entity_id":"u1","payload":{}}'
        assert copy.pack_many([body]) == packer.pack_many([body])
        codecs, stored = copy.pack_many([body, b""])
        assert codecs == [1, 0]  # nothing is smaller than the empty body: kept as received
        assert raw_codec.unpack(codecs[0], stored[0], {1: packer.dictionary}) == body
    finally:
        store.close()


def test_workers_compress_what_the_writer_would(tmp_path: Path, lines: list[bytes]) -> None:
    """Batches prepared in worker processes store the same rows, compressed the same way, as batches
    prepared in this process."""
    tables = {}
    for workers in (0, 1):
        ws = tmp_path / f"w{workers}"
        store = LocalStore(ws, clock=FixedClock(NOW))
        pool = PrepareWorkers.start(workers)
        try:
            service = IngestService(store, store, FixedClock(NOW), run_id="same")
            items = (Received(b, "file:events.jsonl", n) for n, b in enumerate(lines, 1))
            for _ in service.ingest_stream(items, batch_size=300, workers=pool):
                pass
        finally:
            if pool is not None:
                pool.close()
            store.close()
        conn = sqlite3.connect(ws / DB_NAME)
        try:
            tables[workers] = [
                conn.execute("SELECT * FROM raw ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM raw_dictionaries").fetchall(),
            ]
        finally:
            conn.close()
    assert tables[0] == tables[1]
    assert sum(1 for row in tables[1][0] if row[5] == 1) > 600
