"""Batch reads of the workspace's raw bytes (:class:`backend.ports.RawCatalog`)."""

from __future__ import annotations

from collections.abc import Sequence

from backend.adapters.local.store import LocalStore


class LocalCatalog:
    def __init__(self, store: LocalStore) -> None:
        self._raw = store.raw

    def missing(self, keys: Sequence[str]) -> set[str]:
        wanted = set(keys)
        return wanted - self._raw.present(list(wanted)) if wanted else set()

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self._raw.get_many(keys)
