"""Batch reads of the workspace's raw bytes (:class:`backend.ports.RawCatalog`)."""

from __future__ import annotations

from collections.abc import Sequence

from backend.adapters.local.store import LocalStore, _chunks


class LocalCatalog:
    def __init__(self, store: LocalStore) -> None:
        self._store = store

    def missing(self, keys: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        for part in _chunks(wanted):
            marks = ",".join("?" * len(part))
            found.update(k for (k,) in self._store._read(f"SELECT key FROM raw WHERE key IN ({marks})", part))
        return set(wanted) - found

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for part in _chunks(list(dict.fromkeys(keys))):
            marks = ",".join("?" * len(part))
            for key, data in self._store._read(f"SELECT key, data FROM raw WHERE key IN ({marks})", part):
                out[key] = bytes(data)
        return out
