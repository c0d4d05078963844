"""Every raw object of a workspace as (key, bytes as received), for tests that compare whole workspaces.

The raw table keeps an identity key as its partition and event id and the bytes possibly compressed
(schema v6): the key text is rebuilt here as ``backend.identity.raw_key`` makes it, and the bytes are read
back through the store, so a comparison sees what a user of the workspace sees.
"""

from __future__ import annotations

import sqlite3

from backend.adapters.local.store import LocalStore

RAW_KEY_SQL = (
    "coalesce(r.key, 'raw/source=' || p.source || '/event_type=' || p.event_type || '/event_date=' "
    "|| p.day || '/event_id=' || lower(hex(r.event_id)) || '.json')"
)


def raw_keys(conn: sqlite3.Connection) -> list[str]:
    """Every raw key in the workspace of ``conn``, sorted."""
    return sorted(
        k for (k,) in conn.execute(f"SELECT {RAW_KEY_SQL} FROM raw r LEFT JOIN partitions p ON p.id = r.part")
    )


def raw_objects(store: LocalStore) -> list[tuple[str, bytes]]:
    """Every raw object of ``store`` as (key, bytes as received), by key."""
    keys = raw_keys(store.db.connection())
    found = store.raw.get_many(keys)
    assert set(found) == set(keys)
    return [(k, found[k]) for k in keys]
