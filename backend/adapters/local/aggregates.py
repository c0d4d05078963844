"""Versioned aggregates of a local workspace (:class:`backend.ports.AggregateStore`).

A version is one row holding its JSON; a manifest is one row per inputs hash holding zlib-compressed JSON.
``append`` runs in one write transaction (the database's write lock), so the check that version n is free
and n - 1 exists and the insert are atomic across processes; the schema's triggers refuse an overwrite, a
gap, an update or a delete from any other SQLite client too.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from backend.adapters.local.database import chunks
from backend.adapters.local.encoding import cursor_text, to_ms
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.model import AggregateVersion, Page
from backend.ports import ManifestEntry

_VERSION_COLUMNS = "entity_id, day, metric, version, record"


def _version(row: Sequence[Any]) -> AggregateVersion:
    return AggregateVersion.model_validate_json(row[4])


def encode_manifest(entries: Sequence[ManifestEntry]) -> bytes:
    # orjson writes what json.dumps(entries, separators=(",", ":")) writes for ASCII text (hex digests, ISO
    # times), ten times faster: a 300k-event window's manifest took a second. It takes each entry, a named
    # tuple, as the plain tuple ``default`` makes of it. Anything else is written by json, escaped as before.
    text = orjson.dumps(entries, default=tuple)
    if not text.isascii():
        text = json.dumps(list(entries), separators=(",", ":")).encode("ascii")
    # Level 1: hex digests barely compress further, and a recompute should not wait on zlib.
    return zlib.compress(text, 1)


def decode_manifest(data: bytes) -> list[ManifestEntry]:
    return [ManifestEntry(*row) for row in json.loads(zlib.decompress(data))]


class LocalAggregates:
    def __init__(self, store: LocalStore) -> None:
        self._db = store.db

    def latest(self, entity_id: str, day: str, metric: str) -> AggregateVersion | None:
        rows = self._db.read(
            f"SELECT {_VERSION_COLUMNS} FROM aggregate_versions "
            "WHERE entity_id = ? AND day = ? AND metric = ? ORDER BY version DESC LIMIT 1",
            (entity_id, day, metric),
        )
        return _version(rows[0]) if rows else None

    def get(self, entity_id: str, day: str, metric: str, version: int) -> AggregateVersion | None:
        rows = self._db.read(
            f"SELECT {_VERSION_COLUMNS} FROM aggregate_versions "
            "WHERE entity_id = ? AND day = ? AND metric = ? AND version = ?",
            (entity_id, day, metric, version),
        )
        return _version(rows[0]) if rows else None

    def versions(
        self,
        entity_id: str,
        day: str,
        *,
        metric: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[AggregateVersion]:
        where = ["entity_id = ?", "day = ?"]
        params: list[Any] = [entity_id, day]
        if metric is not None:
            where.append("metric = ?")
            params.append(metric)
        page: Page[AggregateVersion] = self._db.page(
            "aggregate-versions",
            f"SELECT {_VERSION_COLUMNS} FROM aggregate_versions",
            where,
            params,
            ["metric", "version"],
            lambda r: [r[2], r[3]],
            lambda key: [cursor_text(key[0]), int(key[1])],
            limit,
            after,
            False,
            _version,
        )
        return page

    def append(self, version: AggregateVersion, manifest: Sequence[ManifestEntry]) -> bool:
        # Metrics over the same inputs share one manifest: encode it only if it is not stored yet (outside
        # the write lock; two processors encoding the same manifest at once is harmless).
        stored = self._db.read(
            "SELECT 1 FROM aggregate_manifests WHERE inputs_hash = ?", (version.inputs_hash,)
        )
        data = None if stored else encode_manifest(manifest)
        key = (version.entity_id, version.day, version.metric)
        with self._db.write("write an aggregate version") as conn:
            if data is not None:
                conn.execute(
                    "INSERT INTO aggregate_manifests (inputs_hash, entries, data) VALUES (?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    (version.inputs_hash, len(manifest), data),
                )
            top = conn.execute(
                "SELECT max(version) FROM aggregate_versions WHERE entity_id = ? AND day = ? AND metric = ?",
                key,
            ).fetchone()[0]
            latest = int(top or 0)
            if version.version <= latest:
                return False
            if version.version > latest + 1:
                raise InvalidRequest(
                    f"version {version.version} of {version.metric} for {version.entity_id!r} on "
                    f"{version.day} would leave a gap: the latest is {latest}"
                )
            conn.execute(
                "INSERT INTO aggregate_versions (entity_id, day, metric, version, inputs_hash, computed_ms, "
                "record) VALUES (?,?,?,?,?,?,?)",
                (
                    *key,
                    version.version,
                    version.inputs_hash,
                    to_ms(version.computed_at),
                    version.model_dump_json(),
                ),
            )
        return True

    def manifest(self, inputs_hash: str) -> list[ManifestEntry] | None:
        rows = self._db.read("SELECT data FROM aggregate_manifests WHERE inputs_hash = ?", (inputs_hash,))
        return decode_manifest(bytes(rows[0][0])) if rows else None

    def windows_with_versions(self, windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for part in chunks(list(dict.fromkeys(windows)), 200):
            match = " OR ".join(["(entity_id = ? AND day = ?)"] * len(part))
            found.update(
                (e, d)
                for e, d in self._db.read(
                    f"SELECT DISTINCT entity_id, day FROM aggregate_versions WHERE {match}",
                    [v for w in part for v in w],
                )
            )
        return found
