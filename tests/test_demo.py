"""The demo workspace: deterministic, built through the real ingest path, holding the promised incidents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from backend.adapters.local.store import LocalStore
from backend.demo import HOSTILE_ENTITY, SKEWED_ENTITY
from backend.model import IngestStatus
from pik_console.cli import main


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("demo") / "ws"
    out = io.StringIO()
    assert main(["demo", "--workspace", str(ws)], out, io.StringIO()) == 0
    assert "Built in" in out.getvalue()
    return ws


def _all(page_fn, **kw):  # type: ignore[no-untyped-def]
    items, after = [], None
    while True:
        page = page_fn(**kw, limit=1000, after=after)
        items += page.items
        if not page.next_cursor:
            return items
        after = page.next_cursor


def test_the_demo_holds_the_incidents(demo_ws: Path) -> None:
    store = LocalStore(demo_ws, create=False)
    try:
        stats = store.stats()
        assert stats.accepted > 5000 and stats.entities >= 50
        assert stats.first_event_time.startswith("2025-12-15") and stats.last_event_time.startswith(
            "2025-12-28"
        )
        # The missing day: every mobile heartbeat of 2025-12-22 arrived about two days late.
        late = _all(store.query_partition, source="mobile", event_type="heartbeat", day="2025-12-22")
        assert late and min(r.ingest_lag_ms for r in late) > 24 * 3600 * 1000
        assert all(r.ingest_time.startswith("2025-12-24T") for r in late)
        # Other days arrived within hours.
        normal = _all(store.query_partition, source="mobile", event_type="heartbeat", day="2025-12-21")
        assert max(r.ingest_lag_ms for r in normal) < 3600 * 1000
        # The duplicate storm: billing purchases with several receipts, some with other bytes.
        dups = _all(
            store.query_partition, source="billing", event_type="purchase", day="2025-12-26",
            status=IngestStatus.DUPLICATE,
        )  # fmt: skip
        assert len(dups) > 30
        assert any(r.s3_key.startswith("receipts/") for r in dups)
        assert any(r.s3_key.startswith("raw/") for r in dups)
        # Clock skew on one phone.
        skewed = _all(store.query_entity, entity_id=SKEWED_ENTITY, start="2025-12-26", end="2025-12-27")
        assert any(r.clock_skew and r.ingest_lag_ms == 0 for r in skewed)
        # Rejections, quarantined with reasons.
        rejected = _all(store.query_rejections)
        assert len(rejected) == stats.rejected >= 10
        assert all(r.reason for r in rejected)
        # The hostile entity is stored as the literal text it is.
        assert (
            len(_all(store.query_entity, entity_id=HOSTILE_ENTITY, start="2025-01-01", end="2026-01-01")) == 1
        )
    finally:
        store.close()


def test_a_second_run_reuses_the_workspace(demo_ws: Path) -> None:
    out = io.StringIO()
    assert main(["demo", "--workspace", str(demo_ws), "--json"], out, io.StringIO()) == 0
    summary = json.loads(out.getvalue())
    assert summary["built_seconds"] is None
    assert summary["accepted"] > 5000


def test_the_demo_is_deterministic(demo_ws: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    assert main(["demo", "--workspace", str(other)], io.StringIO(), io.StringIO()) == 0
    a, b = LocalStore(demo_ws, create=False), LocalStore(other, create=False)
    try:
        for day in ("2025-12-22", "2025-12-26"):
            left = _all(a.query_partition, source="mobile", event_type="heartbeat", day=day)
            right = _all(b.query_partition, source="mobile", event_type="heartbeat", day=day)
            assert [r.model_dump(exclude={"receipt"}) for r in left] == [
                r.model_dump(exclude={"receipt"}) for r in right
            ]
        assert a.stats() == b.stats()
    finally:
        a.close()
        b.close()


def test_the_demo_refuses_a_workspace_that_is_not_a_demo(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"source":"s","event_type":"t","entity_id":"e","event_time":"2025-12-28T00:00:00Z","payload":{}}\n'
    )
    ws = tmp_path / "mine"
    assert main(["ingest", str(src), "--workspace", str(ws)], io.StringIO(), io.StringIO()) == 0
    err = io.StringIO()
    assert main(["demo", "--workspace", str(ws)], io.StringIO(), err) == 1
    assert "not the demo" in err.getvalue()
