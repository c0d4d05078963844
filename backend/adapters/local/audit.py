"""The replay audit trail of a local workspace (:class:`backend.ports.AuditLog`).

One row per replay holding the record as JSON. The schema's triggers refuse a delete, and any update
except finishing a RUNNING record once; the finish itself is conditional on the row still being RUNNING.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.adapters.local.encoding import cursor_text, to_ms
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.model import Page, ReplayAudit, ReplayOutcome


def _record(row: Sequence[Any]) -> ReplayAudit:
    return ReplayAudit.model_validate_json(row[2])


class LocalAudit:
    def __init__(self, store: LocalStore) -> None:
        self._db = store.db

    def begin(self, record: ReplayAudit) -> None:
        started = to_ms(record.started_at)
        with self._db.write("write the replay audit record") as conn:
            taken = conn.execute(
                "SELECT 1 FROM replay_audit WHERE replay_id = ?", (record.replay_id,)
            ).fetchone()
            if taken:
                raise InvalidRequest(f"replay id {record.replay_id!r} is taken")
            conn.execute(
                "INSERT INTO replay_audit (replay_id, started_ms, outcome, record) VALUES (?,?,?,?)",
                (record.replay_id, started, record.outcome.value, record.model_dump_json()),
            )

    def finish(self, record: ReplayAudit) -> None:
        if record.outcome is ReplayOutcome.RUNNING:
            raise InvalidRequest("a replay is finished with its final outcome, not RUNNING")
        with self._db.write("finish the replay audit record") as conn:
            cur = conn.execute(
                "UPDATE replay_audit SET outcome = ?, record = ? WHERE replay_id = ? AND outcome = ?",
                (
                    record.outcome.value,
                    record.model_dump_json(),
                    record.replay_id,
                    ReplayOutcome.RUNNING.value,
                ),
            )
            if cur.rowcount != 1:
                raise InvalidRequest(f"replay {record.replay_id!r} is not running: its record is final")

    def get(self, replay_id: str) -> ReplayAudit | None:
        rows = self._db.read(
            "SELECT replay_id, started_ms, record FROM replay_audit WHERE replay_id = ?", (replay_id,)
        )
        return _record(rows[0]) if rows else None

    def query(self, *, limit: int = 50, after: str | None = None) -> Page[ReplayAudit]:
        page: Page[ReplayAudit] = self._db.page(
            "replay-audit",
            "SELECT replay_id, started_ms, record FROM replay_audit",
            ["1 = 1"],
            [],
            ["started_ms", "replay_id"],
            lambda r: [r[1], r[0]],
            lambda key: [int(key[0]), cursor_text(key[1])],
            limit,
            after,
            True,
            _record,
        )
        return page
