"""bench/storage_bench.py: its byte figures add up to the file, and every codec gives the raw bytes back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from backend.adapters.local.store import LocalStore
from backend.services.ingest import IngestService, Received
from tests.conftest import make_event

ROOT = Path(__file__).resolve().parent.parent


def _storage_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("storage_bench", ROOT / "bench" / "storage_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["storage_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("storage") / "ws"
    store = LocalStore(path)
    try:
        service = IngestService(store, store)
        lines = [make_event(entity_id=f"user_{i % 50}", payload={"steps": i}) for i in range(300)]
        lines += [lines[0], b"not json"]  # a duplicate receipt and a rejection
        results = service.ingest_batch([Received(b, "file:t.jsonl", n) for n, b in enumerate(lines, 1)])
        assert [r.status.value for r in results].count("ACCEPTED") == 300
    finally:
        store.close()
    return path


def test_the_parts_of_the_breakdown_add_up_to_the_file(workspace: Path) -> None:
    bench = _storage_bench()
    parts = bench.breakdown(workspace)
    assert parts["accepted_events"] == 300
    assert parts["receipts"] == 301 and parts["lines"] == 302
    assert sum(p["bytes"] for p in parts["parts"]) == parts["file_bytes"]
    names = {p["name"] for p in parts["parts"]}
    assert {"raw", "raw_by_identity", "events", "rejections"} <= names
    # 300 rows are too few to train a dictionary: every row is stored as received.
    assert (parts["raw_rows"], parts["raw_rows_compressed"]) == (300, 0)
    assert parts["file_bytes_per_line"] == parts["file_bytes"] / 302


def test_every_codec_round_trips_and_the_dictionary_pays_on_small_rows(workspace: Path) -> None:
    bench = _storage_bench()
    figures = bench.raw_compression(workspace, sample=200, dict_rows=100)
    assert figures["rows"] == 200
    codecs = figures["codecs"]
    assert {"zlib-1", "zlib-6", "zlib-9", "zlib-6+dict"} <= set(codecs)
    # Rows of a couple of hundred bytes share most of their text: a dictionary compresses them far better.
    assert codecs["zlib-6+dict"]["bytes_per_event"] < codecs["zlib-6"]["bytes_per_event"] / 2
    assert all(c["bytes_per_event"] > 0 for c in codecs.values())


def test_too_few_rows_for_a_dictionary_is_one_clear_error(workspace: Path) -> None:
    bench = _storage_bench()
    with pytest.raises(RuntimeError, match="at least 1001 are needed"):
        bench.raw_compression(workspace, sample=10, dict_rows=1000)
