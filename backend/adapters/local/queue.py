"""The replay queue of a local workspace (:class:`backend.ports.ReplayQueue`), with SQS semantics.

Messages live in the workspace database, so a replay survives the process that sent it and several
processors can drain one queue: every receive is one write transaction, which hides the messages it
returns for the visibility timeout (nobody else receives them meanwhile), counts the receive and hands out a
fresh receipt handle. A visible message that was already received ``max_receives`` times is moved to the
dead-letter table instead of being delivered, as SQS's redrive policy does.

A message is a small row in ``queue_messages`` (its visibility, receive count and latest receipt token) and
its body in ``queue_bodies`` under the same id (schema version 7): receives rewrite the small rows only.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from backend.adapters.local.database import chunks
from backend.adapters.local.investigate import iso_ms
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.model import Page
from backend.ports import BULK_RECEIVE, QUEUE_BATCH, DeadLetter, QueueDepth, QueueMessage, SendFailure
from backend.times import Clock

# Deletes and releases of more handles than this (a drain's) keep the writer's page cache, as receive_many:
# the queue's indexes then stay cached from one to the next.
_BULK = 1000
# SQS's limit on one message body.
MAX_BODY_BYTES = 256 * 1024
# SQS's limits on the visibility timeout.
MAX_VISIBILITY_S = 12 * 3600


# A receipt handle is ``<row id>.<token>``: the row id lets delete and release find the row by its key
# (receipt_handle has no index), and the token, drawn at random once per receive (64 bits), keeps an earlier
# receive's handle from matching. The row stores the token alone, so that a receive grows each row by 16
# characters rather than by the whole handle; a row received by an earlier version of the kit stores its
# whole handle, which the same token still matches (_MATCH). Handles stay opaque to callers.
_TOKEN_BYTES = 8
# A row that stores a whole handle (a receive by an earlier version), not a token: a token alone, given as a
# handle, must not match every message of its receive.
_WHOLE = f"length(receipt_handle) <> {2 * _TOKEN_BYTES}"
# The rows of one run ``(first id, last id, token)`` of _split.
_MATCH = "id BETWEEN ?1 AND ?2 AND (receipt_handle = ?3 OR receipt_handle = id || '.' || ?3)"


def _split(handles: Sequence[str]) -> tuple[list[tuple[int, int, str]], list[str]]:
    """The handles with a row id as runs ``(first id, last id, token)``: every id from first to last is
    among the handles with that token, so one ranged statement finds exactly those rows. Older handles
    without a row id are returned apart (found by a scan)."""
    ids: dict[str, list[int]] = {}
    other: list[str] = []
    for h in handles:
        head, dot, token = h.partition(".")
        if dot and head.isdigit():
            ids.setdefault(token, []).append(int(head))
        else:
            other.append(h)
    runs: list[tuple[int, int, str]] = []
    for token, some in ids.items():
        some = sorted(set(some))
        first = last = some[0]
        for row_id in some[1:]:
            if row_id != last + 1:
                runs.append((first, last, token))
                first = row_id
            last = row_id
        runs.append((first, last, token))
    return runs, other


def _now_ms(clock: Clock) -> int:
    now = clock.now()
    return int(now.timestamp() * 1000)


class LocalQueue:
    """The replay queue and its dead-letter queue in ``store``'s workspace."""

    def __init__(self, store: LocalStore, *, max_receives: int = 5, clock: Clock | None = None) -> None:
        if max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        self._db = store.db
        self.max_receives = max_receives
        self._clock = clock or Clock()
        self._bulk_after = 0  # where the next receive_many starts reading (a hint, see there)

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        if len(bodies) > QUEUE_BATCH:
            raise InvalidRequest(f"a batch holds at most {QUEUE_BATCH} messages, got {len(bodies)}")
        now = _now_ms(self._clock)
        failures: list[SendFailure] = []
        rows = []
        for i, body in enumerate(bodies):
            if not isinstance(body, str) or not body:
                failures.append(
                    SendFailure(i, "EmptyValue", "a message body must be a non-empty string", True)
                )
            elif len(body.encode("utf-8")) > MAX_BODY_BYTES:
                failures.append(
                    SendFailure(i, "InvalidParameterValue", f"message over {MAX_BODY_BYTES} bytes", True)
                )
            else:
                rows.append((secrets.token_hex(16), body, now, now))
        if rows:
            with self._db.write("send replay messages") as conn:
                # Numbered here, under the write lock, as SQLite would number them: a body takes its row's id.
                first = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM queue_messages").fetchone()[0])
                conn.executemany(
                    "INSERT INTO queue_messages (id, message_id, sent_ms, visible_ms) VALUES (?,?,?,?)",
                    [
                        (first + i, message_id, sent, visible)
                        for i, (message_id, _, sent, visible) in enumerate(rows)
                    ],
                )
                conn.executemany(
                    "INSERT INTO queue_bodies (id, body) VALUES (?,?)",
                    [(first + i, body) for i, (_, body, _, _) in enumerate(rows)],
                )
        return failures

    def receive(self, max_messages: int = QUEUE_BATCH, visibility_timeout_s: int = 30) -> list[QueueMessage]:
        if not 1 <= max_messages <= QUEUE_BATCH:
            raise InvalidRequest(f"receive takes 1 to {QUEUE_BATCH} messages, got {max_messages}")
        if not 0 <= visibility_timeout_s <= MAX_VISIBILITY_S:
            raise InvalidRequest(f"the visibility timeout must be 0 to {MAX_VISIBILITY_S} seconds")
        now = _now_ms(self._clock)
        out: list[QueueMessage] = []
        with self._db.write("receive replay messages") as conn:
            # Received max_receives times and visible again: dead, not delivered (SQS's redrive policy).
            dead = conn.execute(
                "SELECT id FROM queue_messages WHERE visible_ms <= ? AND receive_count >= ? ORDER BY id",
                (now, self.max_receives),
            ).fetchall()
            if dead:
                self._dead_letter(conn, [row[0] for row in dead], now)
            rows = conn.execute(
                "SELECT m.id, m.message_id, b.body, m.sent_ms, m.receive_count FROM queue_messages m "
                "JOIN queue_bodies b ON b.id = m.id WHERE m.visible_ms <= ? ORDER BY m.id LIMIT ?",
                (now, max_messages),
            ).fetchall()
            hidden_until = now + visibility_timeout_s * 1000
            token = secrets.token_hex(_TOKEN_BYTES)
            for row_id, message_id, body, sent_ms, count in rows:
                conn.execute(
                    "UPDATE queue_messages SET visible_ms = ?, receive_count = ?, "
                    "receipt_handle = ? WHERE id = ?",
                    (hidden_until, count + 1, token, row_id),
                )
                out.append(QueueMessage(message_id, f"{row_id}.{token}", body, count + 1, iso_ms(sent_ms)))
        return out

    def delete(self, receipt_handles: Sequence[str]) -> None:
        handles = [h for h in receipt_handles if h]
        if not handles:
            return
        runs, other = _split(handles)
        with self._db.write("delete replay messages", bulk=len(handles) > _BULK) as conn:
            conn.executemany(f"DELETE FROM queue_messages WHERE {_MATCH}", runs)
            for part in chunks(other):
                marks = ",".join("?" * len(part))
                conn.execute(
                    f"DELETE FROM queue_messages WHERE receipt_handle IN ({marks}) AND {_WHOLE}", part
                )

    def release(self, receipt_handles: Sequence[str]) -> None:
        handles = [h for h in receipt_handles if h]
        if not handles:
            return
        now = _now_ms(self._clock)
        runs, other = _split(handles)
        with self._db.write("release replay messages", bulk=len(handles) > _BULK) as conn:
            conn.executemany(
                f"UPDATE queue_messages SET visible_ms = ?4 WHERE {_MATCH}",
                [(*run, now) for run in runs],
            )
            for part in chunks(other):
                marks = ",".join("?" * len(part))
                conn.execute(
                    f"UPDATE queue_messages SET visible_ms = ? WHERE receipt_handle IN ({marks}) "
                    f"AND {_WHOLE}",
                    [now, *part],
                )

    def receive_many(self, max_messages: int, visibility_timeout_s: int = 30) -> list[QueueMessage]:
        """Up to ``max_messages`` (1 to BULK_RECEIVE) visible messages in one write transaction (see
        :class:`backend.ports.BulkReceiveQueue`). Rows are read by id from where this queue's previous
        bulk receive stopped, then from the start: a drain that holds the messages it received does not
        scan past them again at every call. A visible message already received ``max_receives`` times
        that the scan meets is dead-lettered instead of delivered."""
        if not 1 <= max_messages <= BULK_RECEIVE:
            raise InvalidRequest(f"receive_many takes 1 to {BULK_RECEIVE} messages, got {max_messages}")
        if not 0 <= visibility_timeout_s <= MAX_VISIBILITY_S:
            raise InvalidRequest(f"the visibility timeout must be 0 to {MAX_VISIBILITY_S} seconds")
        now = _now_ms(self._clock)
        hidden_until = now + visibility_timeout_s * 1000
        out: list[QueueMessage] = []
        token = secrets.token_hex(_TOKEN_BYTES)
        last_id = 0
        with self._db.write("receive replay messages", bulk=True) as conn:
            for low, high in ((self._bulk_after, None), (0, self._bulk_after)):
                after = low
                while len(out) < max_messages:
                    # The next visible ids (and their receive counts), then one UPDATE of that id range.
                    sql = "SELECT id, receive_count FROM queue_messages WHERE id > ? AND visible_ms <= ?"
                    params: list[Any] = [after, now]
                    if high is not None:
                        sql += " AND id <= ?"
                        params.append(high)
                    ids = conn.execute(
                        sql + " ORDER BY id LIMIT ?", [*params, max_messages - len(out)]
                    ).fetchall()
                    if not ids:
                        break
                    dead = [row_id for row_id, count in ids if count >= self.max_receives]
                    if dead:
                        self._dead_letter(conn, dead, now)
                    last = ids[-1][0]
                    rows = conn.execute(
                        "UPDATE queue_messages SET visible_ms = ?, receive_count = receive_count + 1, "
                        "receipt_handle = ? WHERE id > ? AND id <= ? AND visible_ms <= ? "
                        "RETURNING id, message_id, sent_ms, receive_count",
                        (hidden_until, token, after, last, now),
                    ).fetchall()
                    rows.sort()  # RETURNING's order is SQLite's choice
                    # The bodies of the rows just received (this receive's token marks them), not of the
                    # messages in flight that the range also holds.
                    bodies = dict(
                        conn.execute(
                            "SELECT m.id, b.body FROM queue_messages m JOIN queue_bodies b ON b.id = m.id "
                            "WHERE m.id > ? AND m.id <= ? AND m.receipt_handle = ?",
                            (after, last, token),
                        ).fetchall()
                    )
                    # Messages sent together share their sent time: each is formatted once. Each message
                    # is made as the tuple it is.
                    sent = {ms: iso_ms(ms) for ms in {r[2] for r in rows}}
                    new = tuple.__new__
                    out += [
                        new(
                            QueueMessage,
                            (message_id, f"{row_id}.{token}", bodies[row_id], count, sent[sent_ms]),
                        )
                        for row_id, message_id, sent_ms, count in rows
                    ]
                    if rows:
                        last_id = max(last_id, rows[-1][0])
                    after = last
                if len(out) >= max_messages:
                    break
        if out:
            self._bulk_after = last_id
        return out

    @staticmethod
    def _dead_letter(conn: Any, row_ids: Sequence[int], now: int) -> None:
        """Move the rows ``row_ids`` to the dead-letter table (in id order); their bodies go with them."""
        for part in chunks(row_ids):
            marks = ",".join("?" * len(part))
            conn.execute(
                "INSERT INTO dead_letters (message_id, body, sent_ms, receive_count, dead_ms) "
                "SELECT m.message_id, b.body, m.sent_ms, m.receive_count, ? FROM queue_messages m "
                f"JOIN queue_bodies b ON b.id = m.id WHERE m.id IN ({marks}) ORDER BY m.id",
                [now, *part],
            )
            conn.execute(f"DELETE FROM queue_messages WHERE id IN ({marks})", list(part))

    def depth(self) -> QueueDepth:
        now = _now_ms(self._clock)
        visible, in_flight = self._db.read(
            "SELECT coalesce(sum(visible_ms <= ?), 0), coalesce(sum(visible_ms > ?), 0) FROM queue_messages",
            (now, now),
        )[0]
        dead = self._db.read("SELECT count(*) FROM dead_letters")[0][0]
        return QueueDepth(visible=int(visible), in_flight=int(in_flight), dead=int(dead))

    def dead_letters(self, *, limit: int = 100, after: str | None = None) -> Page[DeadLetter]:
        page: Page[DeadLetter] = self._db.page(
            "dead-letters",
            "SELECT id, message_id, body, sent_ms, receive_count, dead_ms FROM dead_letters",
            ["1 = 1"],
            [],
            ["id"],
            lambda r: [r[0]],
            lambda key: [int(key[0])],
            limit,
            after,
            False,
            _dead_letter,
        )
        return page


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        message_id=row[1], body=row[2], receive_count=row[4], sent_at=iso_ms(row[3]), dead_at=iso_ms(row[5])
    )
