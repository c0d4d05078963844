"""The overview's rollups of a local workspace: counts per (partition, event hour), per (entity, event day)
and per (receive day, source, type, reason), kept in tables of their own (schema version 5).

Nothing is added to ingest. The event index and the quarantine are append-only and their row numbers
(``events.seq``, ``rejections.id``) only grow, under the write lock; so a rollup is a sum over a prefix of
rows, and a watermark (``rollup_watermarks``: the last row counted) says which. :meth:`OverviewRollups.
catch_up` adds the rows past it, a bounded chunk per write transaction (an ingest waiting for the lock waits
for one chunk, not for the whole backlog). Every read adds the rows past the watermark that are still
uncounted, in the same statement, so the same snapshot: an answer is exact however stale the rollup is, and
a read-only workspace answers without writing (a stale rollup then costs its tail, at worst the old scan).

What each row keeps is what the overview's rules need, and no more:

* ``rollup_hours`` (partition, hour, arrival, lag): accepted events and duplicate receipts, accepted events
  with clock skew, and the largest lag of the accepted ones. ``lag`` numbers the bucket of
  :data:`backend.ports.LAG_BUCKETS_MS`; ``arrival`` is -1 for a receipt ingested before its event day
  ended, else the lower bound of its arrival bucket (:func:`backend.lag_buckets.arrival_bucket`: how long
  after the end of its event day it arrived, in whole seconds, minutes, hours or days);
* ``rollup_entity_days`` (day number, entity, arrival): accepted events and those with clock skew;
* ``rollup_rejections``: requests quarantined per receive day, source, type and reason.

A late count ("ingested at or after the end of the event day plus the grace period") is then exact from the
arrival buckets whenever the grace period is a bucket boundary (any whole number of seconds, minutes, hours
or days), or no accepted event falls in the one bucket that straddles it. Otherwise a read answers None and
the caller counts from the events (``backend.adapters.local.overview``).
"""

from __future__ import annotations

from typing import Any

from backend.adapters.local.database import Database
from backend.ports import LAG_BUCKETS_MS, PartitionCount, RejectionCount

# Rows added per write transaction while catching up (a few hundred milliseconds of work).
CHUNK_ROWS = 200_000

# How long after the end of its event day a receipt arrived (``off``), as backend.lag_buckets.arrival_bucket
# rounds it; -1 for one ingested before its day ended (never late: the grace period is >= 0).
_ARRIVAL = (
    "CASE WHEN off < 0 THEN -1 WHEN off < 60000 THEN off - off % 1000 "
    "WHEN off < 7200000 THEN off - off % 60000 WHEN off < 172800000 THEN off - off % 3600000 "
    "ELSE off - off % 86400000 END"
)
# The width of the arrival bucket whose lower bound is ``arrival`` (backend.lag_buckets.arrival_width).
_WIDTH = (
    "CASE WHEN arrival < 60000 THEN 1000 WHEN arrival < 7200000 THEN 60000 "
    "WHEN arrival < 172800000 THEN 3600000 ELSE 86400000 END"
)
# The LAG_BUCKETS_MS bucket of a receipt.
_LAG = (
    "CASE "
    + " ".join(f"WHEN ingest_lag_ms < {bound} THEN {i}" for i, bound in enumerate(LAG_BUCKETS_MS))
    + f" ELSE {len(LAG_BUCKETS_MS)} END"
)
# Receipts with their event hour, event day number and arrival offset, as the rollups group them.
_RECEIPTS = (
    "SELECT part, entity, receipt, clock_skew, ingest_lag_ms, (event_ms % 86400000) / 3600000 AS hour, "
    "event_ms / 86400000 AS dayn, ingest_ms - (event_ms / 86400000 + 1) * 86400000 AS off FROM events"
)
# The rows of each rollup that the receipts matching ``{where}`` add.
_HOUR_ROWS = (
    f"SELECT part, hour, {_ARRIVAL} AS arrival, {_LAG} AS lag, sum(receipt = 0) AS accepted, "
    "sum(receipt > 0) AS duplicate, sum(CASE WHEN receipt = 0 THEN clock_skew ELSE 0 END) AS skewed, "
    "coalesce(max(CASE WHEN receipt = 0 THEN ingest_lag_ms END), 0) AS max_lag "
    f"FROM ({_RECEIPTS} WHERE {{where}}) GROUP BY 1, 2, 3, 4"
)
_ENTITY_ROWS = (
    f"SELECT dayn AS day, entity, {_ARRIVAL} AS arrival, count(*) AS accepted, sum(clock_skew) AS skewed "
    f"FROM ({_RECEIPTS} WHERE receipt = 0 AND {{where}}) GROUP BY 1, 2, 3"
)
_REJECTION_ROWS = (
    "SELECT substr(received_at, 1, 10) AS day, source, event_type, reason, count(*) AS count "
    "FROM rejections WHERE {where} GROUP BY 1, 2, 3, 4"
)
_WATERMARK = "coalesce((SELECT last FROM rollup_watermarks WHERE name = '{name}'), 0)"


def _late(grace_ms: int) -> str:
    """Accepted events late for ``grace_ms``, and those whose bucket straddles it (then unknown)."""
    return (
        f"sum(CASE WHEN arrival >= {grace_ms} THEN accepted ELSE 0 END), "
        f"sum(CASE WHEN arrival >= 0 AND arrival < {grace_ms} AND arrival + {_WIDTH} > {grace_ms} "
        "THEN accepted ELSE 0 END)"
    )


class OverviewRollups:
    """The rollup tables of one workspace: brought up to date by :meth:`catch_up`, read exactly anyway."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- keeping them -------------------------------------------------------------------------------------

    def behind(self) -> int:
        """Event index and quarantine rows not counted yet (a cheap look, without the write lock)."""
        [(events, rejections)] = self._db.read(
            f"SELECT coalesce((SELECT max(seq) FROM events), 0) - {_WATERMARK.format(name='events')}, "
            f"coalesce((SELECT max(id) FROM rejections), 0) - {_WATERMARK.format(name='rejections')}"
        )
        return int(events) + int(rejections)

    def catch_up(self, chunk: int = CHUNK_ROWS) -> int:
        """Count every row past the watermarks, ``chunk`` row numbers per write transaction; returns the
        number of transactions. Safe with other processes doing the same (each re-reads the watermark under
        the lock) and with ingest going on (what it adds later is the next call's, or a read's tail)."""
        transactions = 0
        while self._step("events", "seq", chunk, self._add_events):
            transactions += 1
        while self._step("rejections", "id", chunk, self._add_rejections):
            transactions += 1
        return transactions

    def _step(self, name: str, key: str, chunk: int, add: Any) -> bool:
        with self._db.write("bring the overview's rollups up to date") as conn:
            [(last, top)] = conn.execute(
                f"SELECT {_WATERMARK.format(name=name)}, coalesce((SELECT max({key}) FROM {name}), 0)"
            ).fetchall()
            if top <= last:
                return False
            upto = min(top, last + chunk)
            add(conn, last, upto)
            conn.execute(
                "INSERT INTO rollup_watermarks (name, last) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last = excluded.last",
                (name, upto),
            )
            return True

    @staticmethod
    def _add_events(conn: Any, after: int, upto: int) -> None:
        where = "seq > ? AND seq <= ?"
        # WHERE true: an INSERT ... SELECT with an upsert clause must not end on a bare join.
        conn.execute(
            "INSERT INTO rollup_hours (part, hour, arrival, lag, accepted, duplicate, skewed, max_lag) "
            f"SELECT * FROM ({_HOUR_ROWS.format(where=where)}) WHERE true "
            "ON CONFLICT (part, hour, arrival, lag) DO UPDATE SET accepted = accepted + excluded.accepted, "
            "duplicate = duplicate + excluded.duplicate, skewed = skewed + excluded.skewed, "
            "max_lag = max(max_lag, excluded.max_lag)",
            (after, upto),
        )
        conn.execute(
            "INSERT INTO rollup_entity_days (day, entity, arrival, accepted, skewed) "
            f"SELECT * FROM ({_ENTITY_ROWS.format(where=where)}) WHERE true "
            "ON CONFLICT (day, entity, arrival) DO UPDATE SET accepted = accepted + excluded.accepted, "
            "skewed = skewed + excluded.skewed",
            (after, upto),
        )

    @staticmethod
    def _add_rejections(conn: Any, after: int, upto: int) -> None:
        conn.execute(
            "INSERT INTO rollup_rejections (day, source, event_type, reason, count) "
            f"SELECT * FROM ({_REJECTION_ROWS.format(where='id > ? AND id <= ?')}) WHERE true "
            "ON CONFLICT (day, source IS NULL, ifnull(source, ''), event_type IS NULL, "
            "ifnull(event_type, ''), reason) DO UPDATE SET count = count + excluded.count",
            (after, upto),
        )

    # -- reading them (each read is one statement: the rollup and its uncounted tail in one snapshot) ----

    def hour_rows(self, lo: str, hi: str, grace_ms: int) -> list[Any] | None:
        """Rows of (source, type, day, hour, accepted?, lag bucket, count, late, skewed, max lag) for the
        partitions of days ``[lo, hi)``, as ``backend.adapters.local.overview._fold_hours`` folds them;
        None when a late count is not settled by the arrival buckets."""
        parts = "part IN (SELECT id FROM partitions WHERE day >= ? AND day < ?)"
        # "+part": the tail is read by its seq range, not through every event of the partitions.
        tail = f"seq > {_WATERMARK.format(name='events')} AND +{parts}"
        rows = self._db.read(
            f"WITH r AS (SELECT * FROM rollup_hours WHERE {parts} "
            f"UNION ALL {_HOUR_ROWS.format(where=tail)}) "
            f"SELECT p.source, p.event_type, p.day, r.hour, r.lag, sum(r.accepted), sum(r.duplicate), "
            f"{_late(grace_ms)}, sum(r.skewed), max(r.max_lag) "
            "FROM r JOIN partitions p ON p.id = r.part GROUP BY r.part, r.hour, r.lag",
            (lo, hi, lo, hi),
        )
        out: list[Any] = []
        for source, event_type, day, hour, lag, accepted, duplicate, late, straddling, skewed, top in rows:
            if straddling:
                return None
            if accepted:
                out.append((source, event_type, day, hour, 1, lag, accepted, late, skewed, top))
            if duplicate:
                out.append((source, event_type, day, hour, 0, lag, duplicate, 0, 0, 0))
        return out

    def entity_days(
        self, lo: int, hi: int, grace_ms: int, min_accepted: int, min_skewed: int
    ) -> list[tuple[str, int, int, int, int]] | None:
        """(entity id, day number, accepted, late, skewed) for the event day numbers ``[lo, hi)``, of the
        entities with a day reaching ``min_accepted`` or ``min_skewed``; None as :meth:`hour_rows`."""
        tail = f"seq > {_WATERMARK.format(name='events')} AND event_ms >= ? AND event_ms < ?"
        rows = self._db.read(
            "WITH r AS (SELECT * FROM rollup_entity_days WHERE day >= ? AND day < ? "
            f"UNION ALL {_ENTITY_ROWS.format(where=tail)}), "
            f"g AS (SELECT entity AS ent, day AS d, sum(accepted) AS c, {_late(grace_ms)}, "
            "sum(skewed) AS s FROM r GROUP BY 1, 2), "
            "kept AS (SELECT ent FROM g GROUP BY ent HAVING max(c) >= ? OR max(s) >= ?) "
            "SELECT n.entity_id, g.* FROM g JOIN kept USING (ent) JOIN entities n ON n.id = g.ent",
            (lo, hi, lo * 86_400_000, hi * 86_400_000, min_accepted, min_skewed),
        )
        out = []
        for entity_id, _, day, accepted, late, straddling, skewed in rows:
            if straddling:
                return None
            out.append((str(entity_id), int(day), int(accepted), int(late), int(skewed)))
        return out

    def rejections(self, lo: str, hi: str) -> list[RejectionCount]:
        """Rejections by receive day, source, type and reason for the receive days ``[lo, hi)``."""
        tail = f"id > {_WATERMARK.format(name='rejections')} AND received_at >= ? AND received_at < ?"
        rows = self._db.read(
            "WITH r AS (SELECT day, source, event_type, reason, count FROM rollup_rejections "
            f"WHERE day >= ? AND day < ? UNION ALL {_REJECTION_ROWS.format(where=tail)}) "
            "SELECT day, source, event_type, reason, sum(count) FROM r GROUP BY 1, 2, 3, 4 "
            "ORDER BY 1, coalesce(source, ''), coalesce(event_type, ''), reason",
            (lo, hi, lo, hi),
        )
        return [RejectionCount(d, s, t, r, int(n)) for d, s, t, r, n in rows]

    def partition_totals(self) -> list[PartitionCount]:
        """Accepted events and duplicate receipts per source/type over every day."""
        tail = f"seq > {_WATERMARK.format(name='events')}"
        rows = self._db.read(
            "WITH r AS (SELECT part, accepted, duplicate FROM rollup_hours UNION ALL "
            f"SELECT part, receipt = 0, receipt > 0 FROM events WHERE {tail}) "
            "SELECT p.source, p.event_type, sum(r.accepted), sum(r.duplicate) FROM r "
            "JOIN partitions p ON p.id = r.part GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return [
            PartitionCount(source=s, event_type=t, accepted=int(a), duplicate=int(d)) for s, t, a, d in rows
        ]
