"""Batch reads of the workspace's raw bytes (:class:`backend.ports.RawCatalog`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from backend.adapters.local.database import chunks
from backend.adapters.local.store import LocalStore
from backend.errors import StoreError


class LocalCatalog:
    def __init__(self, store: LocalStore) -> None:
        self._db = store.db
        self._json_each: bool | None = None  # does this SQLite have json_each? (found out on first use)

    def missing(self, keys: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        if self._json_each is not False:
            # One statement for the whole list: a third cheaper than IN (...) lists of bound parameters.
            try:
                rows = self._db.read(
                    "SELECT j.value FROM json_each(?) j "
                    "WHERE NOT EXISTS (SELECT 1 FROM raw WHERE key = j.value)",
                    (json.dumps(wanted),),
                )
                self._json_each = True
                return {k for (k,) in rows}
            except StoreError:
                if self._json_each:
                    raise
                self._json_each = False
        found: set[str] = set()
        for part in chunks(wanted):
            marks = ",".join("?" * len(part))
            found.update(k for (k,) in self._db.read(f"SELECT key FROM raw WHERE key IN ({marks})", part))
        return set(wanted) - found

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for part in chunks(list(dict.fromkeys(keys))):
            marks = ",".join("?" * len(part))
            for key, data in self._db.read(f"SELECT key, data FROM raw WHERE key IN ({marks})", part):
                out[key] = bytes(data)
        return out
