"""Workspaces made by earlier releases keep opening, with everything in them.

``fixtures/workspace-v1.sqlite3`` is a workspace written by schema version 1 (the first release) from
``fixtures/workspace-v1.jsonl``. Never regenerate it: a later schema must migrate it, not replace it.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from backend.adapters.local.schema import MIGRATIONS
from backend.adapters.local.store import DB_NAME, LocalStore
from backend.model import IngestStatus
from backend.services.ingest import IngestService

FIXTURES = Path(__file__).parent / "fixtures"


def _open_copy(tmp_path: Path) -> LocalStore:
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copyfile(FIXTURES / "workspace-v1.sqlite3", ws / DB_NAME)
    return LocalStore(ws, create=False)


def test_a_version_1_workspace_opens_and_reads_back_what_it_holds(tmp_path: Path) -> None:
    store = _open_copy(tmp_path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        stats = store.stats()
        assert (stats.accepted, stats.duplicate, stats.rejected) == (3, 2, 1)
        receipts = store.receipts("bd10f9014e165b6d52271772b19788bb4a54b0f28cac6990d0d91bf2c9d643c0")
        assert [r.status for r in receipts] == [IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]
        lines = (FIXTURES / "workspace-v1.jsonl").read_bytes().split(b"\n")
        assert store.get(receipts[0].s3_key) == lines[0]
        page = store.query_entity("user_7#a/b=c..", "2025-12-27T00:00:00.000Z", "2025-12-28T00:00:00.000Z")
        assert [r.status for r in page.items] == [IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]
        assert page.items[1].s3_key.startswith("receipts/")  # other payload, same idempotency key
        assert store.get(page.items[1].s3_key) == lines[4]
        [rejected] = store.query_rejections().items
        assert "source" in rejected.reason and rejected.line == 6
    finally:
        store.close()


def test_a_version_1_workspace_takes_new_events_without_forgetting_old_ones(tmp_path: Path) -> None:
    store = _open_copy(tmp_path)
    try:
        lines = (FIXTURES / "workspace-v1.jsonl").read_bytes().split(b"\n")
        service = IngestService(store, store)
        again = service.ingest(lines[0], origin="file:again.jsonl")
        assert again.status is IngestStatus.DUPLICATE
        receipts = store.receipts(again.event_id or "")
        assert len(receipts) == 3
        # Receipts from before version 2 have no provenance; new ones do.
        assert [(r.origin, r.line) for r in receipts] == [
            (None, None),
            (None, None),
            ("file:again.jsonl", None),
        ]
    finally:
        store.close()


def test_an_older_workspace_opened_read_only_is_refused_untouched_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from backend.errors import WorkspaceError
    from backend.kit import open_local
    from pik_console.cli import main

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copyfile(FIXTURES / "workspace-v1.sqlite3", ws / DB_NAME)
    before = hashlib.sha256((ws / DB_NAME).read_bytes()).hexdigest()
    with pytest.raises(
        WorkspaceError, match=r"schema version 1 .* not upgraded\. Open it once without --read-only"
    ):
        open_local(ws, read_only=True)
    monkeypatch.setenv("PIK_READ_ONLY", "1")
    out, err = io.StringIO(), io.StringIO()
    code = main(["events", "--status", "REJECTED", "--workspace", str(ws)], out, err)
    assert code == 1 and "without --read-only" in err.getvalue() and "Traceback" not in err.getvalue()
    assert hashlib.sha256((ws / DB_NAME).read_bytes()).hexdigest() == before
    assert sorted(p.name for p in ws.iterdir()) == [DB_NAME]  # not even a WAL file was left
    monkeypatch.delenv("PIK_READ_ONLY")
    upgraded = open_local(ws)  # the upgrade the message names, then read-only works
    upgraded.close()
    open_local(ws, read_only=True).close()


def test_an_upgrade_on_opening_is_said_before_it_starts(tmp_path: Path) -> None:
    # Upgrading a large workspace rewrites the file (seconds to minutes): the command says so first, once.
    from backend.kit import open_local
    from pik_console.cli import main

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copyfile(FIXTURES / "workspace-v1.sqlite3", ws / DB_NAME)
    out, err = io.StringIO(), io.StringIO()
    assert main(["events", "--status", "REJECTED", "--workspace", str(ws)], out, err) == 0
    said = [line for line in err.getvalue().splitlines() if "upgrading" in line]
    assert said == [
        f"pik events: upgrading the workspace {ws} from schema version 1 to {len(MIGRATIONS)} "
        "(once; every stored byte is kept)…"
    ]
    out, err = io.StringIO(), io.StringIO()
    assert main(["events", "--status", "REJECTED", "--workspace", str(ws)], out, err) == 0
    assert "upgrading" not in err.getvalue()  # said once: the upgrade is done
    # Told once, for an existing workspace only.
    told: list[tuple[int, int, int]] = []
    old = tmp_path / "old"
    old.mkdir()
    shutil.copyfile(FIXTURES / "workspace-v1.sqlite3", old / DB_NAME)
    open_local(old, on_upgrade=lambda v, latest: told.append((v, latest, -1))).close()
    assert told == [(1, len(MIGRATIONS), -1)]
    told.clear()
    open_local(tmp_path / "new", on_upgrade=lambda v, latest: told.append((v, latest, -1))).close()
    open_local(old, on_upgrade=lambda v, latest: told.append((v, latest, -1))).close()
    assert told == []  # a new workspace is created, a current one opened: nothing to say
