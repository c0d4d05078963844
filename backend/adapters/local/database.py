"""The SQLite database of a workspace: opening it, its connections, and the ways to read and write it.

A workspace is a folder holding one SQLite file in WAL mode. :class:`Database` opens it (creating the folder
if asked, refusing any other SQLite database untouched, bringing the schema up to date unless it is opened
read-only), gives each thread a connection of its own, and runs every write as one transaction holding the
database's write lock (``BEGIN IMMEDIATE``): that lock is what makes a workspace safe for several processes
at once, and ``synchronous=FULL`` is what makes a committed batch durable. Every table of the workspace (the
raw bytes, the event index, the queue, the audit trail, the aggregates) is read and written through one
:class:`Database`, so they share its connections and its write lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from backend.adapters.local.schema import inspect, migrate
from backend.errors import InvalidRequest, StoreError, WorkspaceError
from backend.model import Page
from backend.paging import decode_cursor, encode_cursor

DB_NAME = "pik.sqlite3"
# Stay well below SQLite's bound-parameter limit in IN (...) lists.
CHUNK = 400

READER_CACHE_KIB = 8 * 1024
"""SQLite's page cache of a connection that only reads (one connection per thread)."""
WRITER_CACHE_KIB = 128 * 1024
"""SQLite's page cache of a connection once it has written a bulk batch (ingest)."""


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``: one slice per ``IN (...)`` list of bound parameters."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Database:
    """The SQLite file ``pik.sqlite3`` in a workspace folder. Thread-safe: one connection per thread."""

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        create: bool = True,
        upgrade: bool = True,
        on_upgrade: Callable[[int, int], None] | None = None,
    ):
        self.path = Path(workspace).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._upgrade = upgrade
        self.read_only = not upgrade  # opened to read: nothing may be written, derived data included
        if self.path.exists() and not self.path.is_dir():
            raise WorkspaceError(f"workspace {self.path} is not a folder")
        if not self.db_path.exists():
            if not create:
                raise WorkspaceError(
                    f"no workspace at {self.path} (create one with `pik ingest` or `pik demo`, "
                    "or point --workspace / PIK_WORKSPACE at an existing one)"
                )
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WorkspaceError(f"cannot create workspace {self.path}: {exc.strerror or exc}") from None
        conn = self.connection()
        try:
            self.schema_version = migrate(conn, upgrade=upgrade, on_upgrade=on_upgrade)
        except sqlite3.Error as exc:
            raise self.error("open", exc) from None

    # -- connections ---------------------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use), in autocommit mode: transactions are
        :meth:`write`'s business."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=60.0, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            # Look before changing anything: a foreign database is refused untouched (no switch to WAL).
            if inspect(conn) == "foreign":
                conn.close()
                raise WorkspaceError(f"{self.db_path} is not a Pipeline Investigation Kit workspace")
            if self._upgrade:  # switching the journal mode writes the file's header: not when read-only
                self._enable_wal(conn)
            # FULL: a committed batch survives power loss, not only a crash (durable before acknowledged).
            conn.execute("PRAGMA synchronous = FULL")
            # Without this, INSERT OR REPLACE deletes rows without firing the immutability triggers (the
            # insert guards in the schema refuse it anyway; this is the second line).
            conn.execute("PRAGMA recursive_triggers = ON")
            # A reader's page cache stays small: a connection per thread, and a scan (the workspace's
            # totals, a big plan) would otherwise keep up to WRITER_CACHE_KIB of pages in each (the console
            # reached 384 MB). A connection that writes in bulk takes the writer's cache (see ``write``).
            conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
            # Fewer, larger checkpoints (per connection, not stored).
            conn.execute("PRAGMA wal_autocheckpoint = 8192")
        except sqlite3.Error as exc:
            raise self.error("open", exc) from None
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL does not wait on the busy handler when another connection holds a
        # write lock (several processes opening one new workspace): retry for as long as the busy timeout.
        deadline = time.monotonic() + 60.0
        delay = 0.005
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        if mode.lower() != "wal":
            raise WorkspaceError(f"workspace {self.path}: cannot switch the database to WAL mode")

    def close(self) -> None:
        """Close every thread's connection; a later call on any thread opens a new one."""
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def error(self, action: str, exc: sqlite3.Error) -> StoreError:
        """``exc`` as the kit's error: a WorkspaceError when the file cannot be a workspace or cannot be
        opened or written at all, a StoreError naming ``action`` otherwise."""
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return WorkspaceError(f"{self.db_path} is not a Pipeline Investigation Kit workspace ({text})")
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return WorkspaceError(f"cannot {action} workspace {self.path}: {text}")
        return StoreError(f"workspace {self.path}: {action} failed: {text}")

    # -- transactions and reads ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, action: str, *, bulk: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction holding the database's write lock; rolled back whole on any failure. Called
        inside another on the same thread, it joins that one. ``bulk``: one of many large writes (ingest's
        batches): this thread's connection keeps the writer's page cache from then on."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        if bulk and not getattr(self._local, "writer", False):
            # Index pages stay cached across batches (the reader's cache thrashes from ~50k events on):
            # ingest speed roughly doubles.
            self._local.writer = True
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(action, exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.error(action, exc) from None
            raise

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of one statement, on this thread's connection (in its open transaction, if any)."""
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error("read", exc) from None

    def page(
        self,
        kind: str,
        select: str,
        where: list[str],
        params: list[Any],
        order: list[str],
        key_of: Any,
        key_to_sql: Any,
        limit: int,
        after: str | None,
        descending: bool,
        convert: Any,
    ) -> Page[Any]:
        """One page of ``select ... WHERE where`` in ``order`` (which must be unique), after the cursor
        ``after``: keyset paging, so a page costs the same wherever it starts. ``key_of(row)`` is a row's
        key as cursor values, ``key_to_sql(values)`` turns a cursor's values back into column values (it
        raises ValueError or TypeError for a damaged cursor), ``convert(row)`` makes an item of a row."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidRequest(f"limit must be a whole number of at least 1, got {limit!r}")
        # The direction is part of the cursor's kind, so a cursor cannot be replayed the other way.
        kind = f"{kind}:{'desc' if descending else 'asc'}"
        if after is not None:
            key = decode_cursor(kind, after, len(order))
            op = "<" if descending else ">"
            where = [*where, f"({', '.join(order)}) {op} ({', '.join('?' * len(order))})"]
            try:
                params = [*params, *key_to_sql(key)]
            except (ValueError, TypeError, OverflowError):
                raise InvalidRequest("the cursor is damaged: use the next_cursor of the same query") from None
        direction = " DESC" if descending else ""
        sql = (
            f"{select} WHERE {' AND '.join(where)} "
            f"ORDER BY {', '.join(col + direction for col in order)} LIMIT ?"
        )
        rows = self.read(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(kind, key_of(rows[-1])) if more and rows else None
        return Page(items=[convert(r) for r in rows], next_cursor=cursor)
