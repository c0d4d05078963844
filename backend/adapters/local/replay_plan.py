"""A replay's selection and its planned receipts from the local event index, in SQL
(:meth:`backend.ports.InvestigationIndex.select_replay` and ``replay_receipts``).

The counts are one aggregate over the entity index; the planned list is one ordered scan that checks each
row's raw key in the raw table's key index as it goes and stops when the limit is filled. A dry run takes
from each row only its fingerprint line and its (entity, day) as SQL computes them: receipts are built for
the sample alone. An execution reads the same list again in keyset pages, as receipts, a page at a time.
Both answer exactly what :mod:`backend.replay_selection` answers receipt by receipt (a contract test
compares them, and ``tests/test_replay_fingerprints.py`` pins the fingerprints).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from backend.adapters.local.database import Database, chunks
from backend.adapters.local.encoding import to_ms
from backend.adapters.local.receipt_rows import DAY_MS, SCAN_COLUMNS, SCAN_FROM, day_text, iso_ms, receipts
from backend.errors import Cancelled
from backend.model import IngestStatus, Page, ReplayRequest
from backend.ports import Receipt, ReplaySelection
from backend.replay_fingerprint import Fingerprint
from backend.times import day_range

_FETCH = 4096
# See _ranged_keys: a partition of at most RANGE_FACTOR x the receipts a plan needs has its raw keys read as
# one range; sizing the candidates reads at most SIZING_FACTOR x that many index entries in all.
RANGE_FACTOR = 2
SIZING_FACTOR = 2
# Days since the epoch stay below 2**20 (the kit's times end in 2099): an (entity, day) pair as one integer.
_DAY_BITS = 1 << 20
# Whether a receipt's raw bytes exist, inside the scan (no key list goes through Python): its identity key
# (backend.identity.raw_key) is the raw table's (part, event_id), any other key is looked up as text.
RAW_PRESENT = (
    "CASE WHEN e.s3_key IS NULL "
    "THEN EXISTS (SELECT 1 FROM raw WHERE raw.part = e.part "
    "AND substr(raw.event_id, 1, 8) = substr(e.event_id, 1, 8) AND raw.event_id = e.event_id) "
    "ELSE EXISTS (SELECT 1 FROM raw WHERE raw.key = e.s3_key) END"
)
# A dry run's columns: the fingerprint line (backend.replay_fingerprint.line), (entity, day) as one number,
# the event time (then the event id, the partition, and whether its raw bytes exist, last).
_PLAN_COLUMNS = (
    "lower(hex(e.event_id)) || ':' || e.receipt || char(10), "
    f"e.entity * {_DAY_BITS} + e.event_ms / {DAY_MS}, e.event_ms"
)


@dataclass(slots=True)
class _Scope:
    """A request as SQL: its scopes (condition, parameters, order, order's columns), the filters."""

    scopes: list[tuple[str, list[Any], str]] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    passes_params: list[Any] = field(default_factory=list)
    include_duplicates: bool = False

    @property
    def passing(self) -> str:
        return " AND ".join(self.passes) or "1"

    @property
    def eligible(self) -> str:
        return self.passing if self.include_duplicates else f"{self.passing} AND e.receipt = 0"


def _scope(conn: sqlite3.Connection, request: ReplayRequest) -> _Scope:
    s = _Scope(include_duplicates=request.include_duplicates)
    if request.status is IngestStatus.ACCEPTED:
        s.passes.append("e.receipt = 0")
    elif request.status is IngestStatus.DUPLICATE:
        s.passes.append("e.receipt > 0")
    if request.entity_id is not None:
        assert request.start_time is not None and request.end_time is not None
        if request.source is not None:
            s.passes.append("p.source = ?")
            s.passes_params.append(request.source)
        if request.event_type is not None:
            s.passes.append("p.event_type = ?")
            s.passes_params.append(request.event_type)
        entity = conn.execute("SELECT id FROM entities WHERE entity_id = ?", (request.entity_id,)).fetchone()
        if entity is not None:
            s.scopes.append(
                (
                    "e.entity = ? AND e.event_ms >= ? AND e.event_ms < ?",
                    [entity[0], to_ms(request.start_time), to_ms(request.end_time)],
                    "e.event_ms, e.event_id, e.receipt",
                )
            )
    else:
        assert request.source and request.event_type and request.start_day and request.end_day
        for day in day_range(request.start_day, request.end_day):
            part = conn.execute(
                "SELECT id FROM partitions WHERE source = ? AND event_type = ? AND day = ?",
                (request.source, request.event_type, day),
            ).fetchone()
            if part is not None:
                s.scopes.append(("e.part = ?", [part[0]], "e.ingest_lag_ms, e.seq"))
    return s


def _counts(conn: sqlite3.Connection, s: _Scope) -> tuple[int, int, int]:
    """Receipts in scope, left out by the filters, and duplicates left out (unless included)."""
    scanned = filtered = duplicate = 0
    # Without a source/type filter the counts need no partition: read from the index alone.
    counted_from = SCAN_FROM if s.passes_params else "events e"
    for where, params, _ in s.scopes:
        n, out, dup = conn.execute(
            f"SELECT count(*), coalesce(sum(NOT ({s.passing})), 0), "
            f"coalesce(sum(({s.passing}) AND e.receipt > 0), 0) FROM {counted_from} WHERE {where}",
            [*s.passes_params, *s.passes_params, *params],
        ).fetchone()
        scanned += n
        filtered += out
        duplicate += 0 if s.include_duplicates else dup
    return scanned, filtered, duplicate


def _cut(rows: list[Any], remaining: int, flags: list[Any] | None = None) -> tuple[list[Any], list[Any]]:
    """The rows read and the rows planned of one fetch, when ``remaining`` more may be planned: raw keys
    are checked in order until the limit is filled, so the fetch is cut after the row that fills it.
    ``flags`` say whether each row's raw bytes exist (default: each row's last column)."""
    flags = flags if flags is not None else [r[-1] for r in rows]
    present = [r for r, f in zip(rows, flags, strict=True) if f]
    if len(present) < remaining:
        return rows, present
    seen = cut = 0
    for cut, f in enumerate(flags):  # noqa: B007
        seen += f
        if seen == remaining:
            break
    return rows[: cut + 1], present[:remaining]


def _key_of(line: str) -> tuple[bytes, int]:
    """(event id, receipt number) of a fingerprint line, ``"<hex id>:<receipt>\\n"``."""
    event_id, _, receipt = line.partition(":")
    return bytes.fromhex(event_id), int(receipt)


def _ranged_keys(
    conn: sqlite3.Connection, request: ReplayRequest, s: _Scope, need: int
) -> dict[int, set[bytes]]:
    """The event ids whose identity key is in the raw table, by partition, for the partitions that
    cost less to read whole, as one range of the raw identity index, than to look up row by row: those with at
    most RANGE_FACTOR times the receipts the plan needs. Sizing them is bounded too (SIZING_FACTOR)."""
    if need == 0 or not s.scopes:
        return {}
    if request.entity_id is not None:
        assert request.start_time is not None and request.end_time is not None
        last_day = iso_ms(to_ms(request.end_time) - 1)[:10]
        candidates = conn.execute(
            "SELECT id, source, event_type, day FROM partitions WHERE day >= ? AND day <= ?",
            (request.start_time[:10], last_day),
        ).fetchall()
    else:
        ids = [params[0] for _, params, _ in s.scopes]
        marks = ",".join("?" * len(ids))
        candidates = conn.execute(
            f"SELECT id, source, event_type, day FROM partitions WHERE id IN ({marks})", ids
        ).fetchall()
    bound = RANGE_FACTOR * need
    budget = SIZING_FACTOR * bound
    out: dict[int, set[bytes]] = {}
    for part, *_ in candidates:
        if budget <= 0:
            break
        (size,) = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM events WHERE part = ? LIMIT ?)", (part, bound + 1)
        ).fetchone()
        budget -= size
        if size == 0 or size > bound:
            continue
        rows = conn.execute("SELECT event_id FROM raw WHERE part = ?", (part,)).fetchall()
        out[part] = {eid for (eid,) in rows}
    return out


def select(
    conn: sqlite3.Connection,
    request: ReplayRequest,
    sample: int,
    receipts_of: Callable[[list[tuple[bytes, int]]], list[Receipt]],
    progress: Callable[[int, int | None], None] | None,
    should_stop: Callable[[], bool] | None,
) -> ReplaySelection:
    """The selection of ``request`` in SQL (inside the caller's read transaction)."""
    s = _scope(conn, request)
    scanned, filtered, duplicate = _counts(conn, s)
    eligible = scanned - filtered - duplicate
    total = eligible if eligible <= request.limit else None
    ranged = _ranged_keys(conn, request, s, min(eligible, request.limit))
    present_sql = RAW_PRESENT
    if ranged:
        # Rows of a partition read as a range are looked up in Python (NULL here); the others in SQL.
        parts = ",".join(str(int(p)) for p in ranged)
        present_sql = f"CASE WHEN e.s3_key IS NULL AND e.part IN ({parts}) THEN NULL ELSE {RAW_PRESENT} END"
    remaining = request.limit
    used = missing = 0
    fingerprint = Fingerprint()
    windows: Counter[int] = Counter()
    first: int | None = None
    last: int | None = None
    sample_keys: list[tuple[bytes, int]] = []
    for where, params, order in s.scopes:
        if remaining == 0:
            break
        cursor = conn.execute(
            f"SELECT {_PLAN_COLUMNS}, e.event_id, e.part, {present_sql} FROM {SCAN_FROM} "
            f"WHERE {where} AND {s.eligible} ORDER BY {order}",
            [*params, *s.passes_params],
        )
        try:
            while remaining:
                if should_stop is not None and should_stop():
                    raise Cancelled(f"stopped after {used:,} receipts read")
                rows = cursor.fetchmany(_FETCH)
                if not rows:
                    break
                flags = [r[-1] if r[-1] is not None else r[-3] in ranged[r[-2]] for r in rows]
                rows, present = _cut(rows, remaining, flags)
                used += len(rows)
                missing += len(rows) - len(present)
                remaining -= len(present)
                if progress is not None:
                    progress(used, total)
                if not present:
                    continue
                fingerprint.add_lines([r[0] for r in present])
                windows.update([r[1] for r in present])
                low = min([r[2] for r in present])
                high = max([r[2] for r in present])
                first = low if first is None else min(first, low)
                last = high if last is None else max(last, high)
                if len(sample_keys) < sample:
                    sample_keys += [_key_of(r[0]) for r in present[: sample - len(sample_keys)]]
        finally:
            cursor.close()
    pairs = {divmod(w, _DAY_BITS): n for w, n in windows.items()}
    names: dict[int, str] = {}
    for part in chunks(sorted({e for e, _ in pairs})):
        marks = ",".join("?" * len(part))
        names.update(conn.execute(f"SELECT id, entity_id FROM entities WHERE id IN ({marks})", part))
    by_day: Counter[str] = Counter()
    for (_, day_number), count in pairs.items():
        by_day[day_text(day_number)] += count
    return ReplaySelection(
        scanned=scanned,
        filtered=filtered,
        duplicate=duplicate,
        missing_raw=missing,
        over_limit=eligible - used,
        planned=request.limit - remaining,
        by_day=dict(sorted(by_day.items())),
        windows=sorted((names[e], day_text(d)) for e, d in pairs),
        entities=len(names),
        first_event_time=None if first is None else iso_ms(first),
        last_event_time=None if last is None else iso_ms(last),
        sample=receipts_of(sample_keys),
        fingerprint=fingerprint.hexdigest(),
        checkpoints=tuple(fingerprint.checkpoints),
    )


def planned(db: Database, request: ReplayRequest) -> Iterator[Receipt]:
    """The planned receipts of ``request`` in order, a keyset page of rows at a time: each page is its own
    statement, so nothing is held open between pages (the caller sends between them)."""
    conn = db.connection()
    try:
        s = _scope(conn, request)
    except sqlite3.Error as exc:
        raise db.error("read", exc) from None
    remaining = request.limit
    columns = SCAN_COLUMNS.format(entity="n.entity_id")
    for where, params, order in s.scopes:
        keys = [c.strip() for c in order.split(",")]
        width = len(keys)
        after: list[Any] | None = None
        while remaining:
            keyset = ""
            extra: list[Any] = []
            if after is not None:
                keyset = f" AND ({order}) > ({', '.join('?' * width)})"
                extra = after
                if keys[0] == "e.event_ms":
                    # The row value alone does not bound the index range: start the range at the cursor.
                    keyset += " AND e.event_ms >= ?"
                    extra = [*after, after[0]]
            try:
                rows = conn.execute(
                    f"SELECT {columns}, {order}, {RAW_PRESENT} FROM {SCAN_FROM} "
                    f"JOIN entities n ON n.id = e.entity WHERE {where} AND {s.eligible}{keyset} "
                    f"ORDER BY {order} LIMIT {_FETCH}",
                    [*params, *s.passes_params, *extra],
                ).fetchall()
            except sqlite3.Error as exc:
                raise db.error("read", exc) from None
            if not rows:
                break
            last_page = len(rows) < _FETCH
            after = list(rows[-1][-1 - width : -1])
            _, present = _cut(rows, remaining)
            remaining -= len(present)
            yield from receipts(Page(items=[r[: -1 - width] for r in present], next_cursor=None)).items
            if last_page:
                break
