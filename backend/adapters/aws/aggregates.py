"""Versioned aggregates on AWS (:class:`backend.ports.AggregateStore`): versions in the aggregates table,
input manifests in the raw bucket.

**Versions.** ``PK=ENTITY#<entity_id>``, ``SK=DAY#<day>#MET#<metric>#VER#<version, 10 digits>``: the
versions of one (entity, day, metric) are one key range in numeric order, so ``latest`` is one Query
(descending, ``Limit 1``), ``get`` one GetItem, ``versions`` one Query per page. The item holds the
:class:`~backend.model.AggregateVersion` as JSON (``record``, read back exactly) and, for people reading
the table, the original kit's attribute names: ``metric_name``, ``value``, ``inputs_hash``,
``computed_at``, ``window_start``, ``window_end``, ``input_count``, ``sample_event_ids``, plus
``version`` and ``replay_ids``.

**Append** is one ``TransactWriteItems``: a ``ConditionCheck`` that version n - 1 exists and a ``Put`` of
version n with ``attribute_not_exists(PK)``. A taken n cancels it (False: another processor got there
first); a missing n - 1 is a gap (InvalidRequest). Version 1 is a conditional ``Put`` in a transaction
with the window's head item (``backend.adapters.aws.window_heads``: the plan's blast radius reads the heads,
100 windows a call). Nothing is ever overwritten or deleted.

**Manifests** (every input's event id, payload hash, ingest time and lag) outgrow an item: a 10,000-event
manifest is about 0.8 MB, twice DynamoDB's 400 KB limit. They are S3 objects
``manifests/<inputs_hash>.json.gz`` (gzip of ``{"inputs_hash", "columns", "rows"}``, rows sorted by event
id), written with ``IfNoneMatch='*'`` *before* the version item, so a version never points at a missing
manifest. Content-addressed: metrics and versions over the same inputs share one object, and a second
write of it is refused by S3 and harmless. The processor needs ``s3:PutObject`` and ``s3:GetObject`` on
``manifests/*`` for this.

**The original kit's versions.** It wrote ``SK=DAY#<YYYY-MM-DD>#VER#<unix_seconds>`` in the same
partitions, with ``metric_name, value, inputs_hash, computed_at, window_start, window_end, input_count,
sample_event_ids``. They are read, never written: the versions of one (entity, day, metric) are its items
numbered 1..L in time order, then this kit's L+1, L+2... (``latest`` and ``append`` know both, so the
sequence has no gap and no second version 1). What such a version lacks is mapped honestly:

* ``definition``: the original kit recorded none; its metric is a count of the day's events (the seed's
  ``daily_event_count``), so it reads as ``kind=count`` of ``metric_name``, with ``definition_hash``
  ``"original-kit"``, which never equals a real definition's hash. Its ``inputs_hash`` was computed its own
  way too. So the first recompute by this kit always writes a new version, even over the same events:
  nothing says they are the same.
* no manifest (``manifest(...)`` is None for its hash: the original kit kept ``sample_event_ids`` only),
  no ``replay_ids``, no ``window_events``; ``values_used`` is ``input_count``; times are read in any
  ISO-8601 form and given in the stored fixed-precision form.

Reading them costs one more Query where this kit has no version of the metric yet (``latest``, the first
``append``) and one per page of ``versions``. This assumes the original kit no longer writes to the table:
a version it added later would renumber its own and could collide with this kit's numbers.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.clients import AwsClients
from backend.adapters.aws.dynamo import num_attr, str_attr, transact, value_of
from backend.adapters.aws.errors import NOT_FOUND_CODES, aws, error_code, store_error
from backend.adapters.aws.latest_versions import latest_many
from backend.adapters.aws.window_heads import WindowHeads, head_put
from backend.errors import InvalidRequest, StoreError
from backend.model import SOURCE_PATTERN, AggregateVersion, MetricKind, MetricSpec, Page
from backend.paging import decode_cursor, encode_cursor
from backend.ports import ManifestEntry
from backend.times import TimeFormatError, fmt, parse_iso

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

MANIFEST_PREFIX = "manifests/"
MANIFEST_COLUMNS = ["event_id", "payload_sha", "ingest_time", "ingest_lag_ms"]
VERSION_DIGITS = 10
MAX_VERSION = 10**VERSION_DIGITS - 1
LEGACY_DEFINITION_HASH = "original-kit"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_METRIC = re.compile(SOURCE_PATTERN)
_HASH = re.compile(r"^[0-9a-f]{64}$")
_KIND = "aws-aggregate-versions"

Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def _pk(entity_id: str) -> str:
    return f"ENTITY#{entity_id}"


def _sk(day: str, metric: str, version: int) -> str:
    return f"DAY#{day}#MET#{metric}#VER#{version:0{VERSION_DIGITS}d}"


def _metric_prefix(day: str, metric: str) -> str:
    return f"DAY#{day}#MET#{metric}#VER#"


def _legacy_prefix(day: str) -> str:
    return f"DAY#{day}#VER#"


def _keyable(day: str, metric: str | None) -> bool:
    """Whether ``day`` and ``metric`` can be part of a key (anything else could reach other keys)."""
    return bool(_DAY.match(day)) and (metric is None or bool(_METRIC.match(metric)))


def _number(value: int | float | None) -> dict[str, Any] | None:
    """``value`` as a DynamoDB number, or None where DynamoDB cannot hold it (38 digits, 1e-130..1e126)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return num_attr(value) if len(str(abs(value))) <= 38 else None
    if not math.isfinite(value) or (value != 0 and not 1e-129 < abs(value) < 1e125):
        return None
    return {"N": repr(value)}


def _version_from(item: dict[str, Any]) -> AggregateVersion:
    return AggregateVersion.model_validate_json(value_of(item, "record"))


class DynamoAggregates:
    """:class:`backend.ports.AggregateStore` on the aggregates table and the raw bucket's ``manifests/``.

    ``map_fn`` runs independent reads (one per window in :meth:`windows_with_versions`), concurrently if
    it likes; by default one after the other.
    """

    def __init__(self, clients: AwsClients, table: str, bucket: str, *, map_fn: Mapper | None = None) -> None:
        self.ddb: DynamoDBClient = clients.dynamodb
        self.s3: S3Client = clients.s3
        self.table = table
        self.bucket = bucket
        self._map: Mapper = map_fn or (lambda fn, items: [fn(i) for i in items])
        self.heads = WindowHeads(self.ddb, table)
        # Inputs hashes whose manifest this process stored or saw stored: metrics over the same inputs are
        # appended one after the other, and the second need not send 0.8 MB again to be refused.
        self._stored: set[str] = set()

    # -- reads -------------------------------------------------------------------------------------------

    def latest(self, entity_id: str, day: str, metric: str) -> AggregateVersion | None:
        if not _keyable(day, metric):
            return None
        with aws(f"read the latest {metric} of {entity_id!r} on {day}"):
            items = self.ddb.query(
                TableName=self.table,
                KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
                ExpressionAttributeValues={
                    ":pk": str_attr(_pk(entity_id)),
                    ":prefix": str_attr(_metric_prefix(day, metric)),
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            ).get("Items", [])
        if items:
            return _version_from(items[0])
        legacy = self._legacy(entity_id, day).get(metric)
        return legacy[-1] if legacy else None

    def latest_many(
        self, windows: Sequence[tuple[str, str]], metrics: Sequence[str]
    ) -> dict[tuple[str, str, str], AggregateVersion | None]:
        """:class:`backend.ports.LatestVersions`: heads, then a Query per entity (latest_versions.py)."""
        return latest_many(self, windows, metrics)

    def get(self, entity_id: str, day: str, metric: str, version: int) -> AggregateVersion | None:
        if not _keyable(day, metric) or not 1 <= version <= MAX_VERSION:
            return None
        with aws(f"read version {version} of {metric} of {entity_id!r} on {day}"):
            item = self.ddb.get_item(
                TableName=self.table,
                Key={"PK": str_attr(_pk(entity_id)), "SK": str_attr(_sk(day, metric, version))},
                ConsistentRead=True,
            ).get("Item")
        if item:
            return _version_from(item)
        legacy = self._legacy(entity_id, day).get(metric, [])
        return legacy[version - 1] if version <= len(legacy) else None

    def versions(
        self,
        entity_id: str,
        day: str,
        *,
        metric: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[AggregateVersion]:
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        last: tuple[str, int] | None = None
        if after is not None:
            key = decode_cursor(_KIND, after, 2)
            if not isinstance(key[0], str) or not isinstance(key[1], int) or key[1] < 0:
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing")
            last = (key[0], key[1])
        if not _keyable(day, metric) or (last is not None and not _keyable(day, last[0])):
            return Page[AggregateVersion](items=[])
        # This kit's versions after the cursor: one key range in (metric, version) order.
        if metric is None:
            lo, hi = f"DAY#{day}#MET#", f"DAY#{day}#MET$"
        else:
            lo, hi = _metric_prefix(day, metric), _metric_prefix(day, metric)[:-1] + "$"
        if last is not None:
            lo = max(lo, _sk(day, last[0], min(last[1] + 1, MAX_VERSION)))
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": str_attr(_pk(entity_id)),
                ":lo": str_attr(lo),
                ":hi": str_attr(hi),
            },
            "ConsistentRead": True,
        }
        ours: list[AggregateVersion] = []
        while len(ours) <= limit:
            kwargs["Limit"] = limit + 1 - len(ours)
            with aws(f"read the aggregate versions of {entity_id!r} on {day}"):
                page = self.ddb.query(**kwargs)
            ours += [_version_from(i) for i in page.get("Items", [])]
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        # The original kit's versions of the day (few: one per recompute it made), merged in.
        legacy = [
            v
            for name, chain in self._legacy(entity_id, day).items()
            if metric is None or name == metric
            for v in chain
            if last is None or (v.metric, v.version) > last
        ]
        merged = sorted(ours + legacy, key=lambda v: (v.metric, v.version))
        items = merged[:limit]
        cursor = encode_cursor(_KIND, [items[-1].metric, items[-1].version]) if len(merged) > limit else None
        return Page[AggregateVersion](items=items, next_cursor=cursor)

    def manifest(self, inputs_hash: str) -> list[ManifestEntry] | None:
        if not _HASH.match(inputs_hash):
            return None
        key = f"{MANIFEST_PREFIX}{inputs_hash}.json.gz"
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            raise store_error(f"read the input manifest {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read the input manifest {key}", exc) from None
        try:
            doc = json.loads(gzip.decompress(body))
            entries = [ManifestEntry(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in doc["rows"]]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise StoreError(f"the input manifest {key} is damaged ({exc})") from None
        self._stored.add(inputs_hash)
        return sorted(entries, key=lambda e: e.event_id)

    def windows_with_versions(self, windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = [w for w in dict.fromkeys(windows) if _keyable(w[1], None)]
        if not wanted:
            return set()
        if self.heads.kept():  # one BatchGetItem per 100 windows (backend.adapters.aws.window_heads)
            return self.heads.having_heads(wanted)

        def has_versions(window: tuple[str, str]) -> bool:
            entity_id, day = window
            with aws(f"look for aggregate versions of {entity_id!r} on {day}"):
                page = self.ddb.query(
                    TableName=self.table,
                    # Both this kit's keys and the original kit's start with the day.
                    KeyConditionExpression="PK = :pk AND begins_with(SK, :day)",
                    ExpressionAttributeValues={
                        ":pk": str_attr(_pk(entity_id)),
                        ":day": str_attr(f"DAY#{day}#"),
                    },
                    ProjectionExpression="PK",
                    Limit=1,
                )
            return bool(page.get("Items"))

        found = self._map(has_versions, wanted)
        return {w for w, yes in zip(wanted, found, strict=True) if yes}

    # -- append ------------------------------------------------------------------------------------------

    def append(self, version: AggregateVersion, manifest: Sequence[ManifestEntry]) -> bool:
        v = version
        if not _DAY.match(v.day):
            raise InvalidRequest(f"day {v.day!r} is not YYYY-MM-DD")
        if not _METRIC.match(v.metric):
            raise InvalidRequest(f"metric name {v.metric!r} is not a name ({SOURCE_PATTERN})")
        if v.version > MAX_VERSION:
            raise InvalidRequest(f"version {v.version} is over {MAX_VERSION}")
        if not _HASH.match(v.inputs_hash):
            raise InvalidRequest("inputs_hash must be a sha256 in hex (it names the manifest's object)")
        what = f"version {v.version} of {v.metric} of {v.entity_id!r} on {v.day}"
        self._store_manifest(v.inputs_hash, manifest)
        item = self._item(v)
        put = {
            "Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}
        }
        if v.version == 1:
            if self._legacy(v.entity_id, v.day).get(v.metric):
                return False  # version 1 is the original kit's
            # With the window's head (backend.adapters.aws.window_heads), in one transaction.
            self.heads.mark_if_empty()
            head = head_put(self.table, v.entity_id, v.day)
            return transact(self.ddb, f"write {what}", [put, head]) is None
        previous = {"PK": str_attr(_pk(v.entity_id)), "SK": str_attr(_sk(v.day, v.metric, v.version - 1))}
        reasons = transact(self.ddb, f"write {what}", [self._exists(previous), put])
        if reasons is None:
            return True
        if reasons[1] == "ConditionalCheckFailed":
            return False
        # Version n - 1 is not one of this kit's: the original kit's last one, or a gap.
        legacy = self._legacy_keyed(v.entity_id, v.day).get(v.metric, [])
        if v.version <= len(legacy):
            return False
        if v.version == len(legacy) + 1:
            last_sk = legacy[-1][0]
            reasons = transact(
                self.ddb,
                f"write {what}",
                [self._exists({"PK": str_attr(_pk(v.entity_id)), "SK": str_attr(last_sk)}), put],
            )
            if reasons is None:
                return True
            if reasons[1] == "ConditionalCheckFailed":
                return False
        if self.get(v.entity_id, v.day, v.metric, v.version) is not None:
            return False  # taken after all (a store that reports only the first failed condition)
        latest = self.latest(v.entity_id, v.day, v.metric)
        raise InvalidRequest(f"{what} would leave a gap: the latest is {latest.version if latest else 0}")

    def _exists(self, key: dict[str, Any]) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": key,
                "ConditionExpression": "attribute_exists(PK)",
            }
        }

    def _item(self, v: AggregateVersion) -> dict[str, Any]:
        item: dict[str, Any] = {
            "PK": str_attr(_pk(v.entity_id)),
            "SK": str_attr(_sk(v.day, v.metric, v.version)),
            "record": str_attr(v.model_dump_json()),
            "version": num_attr(v.version),
            "metric_name": str_attr(v.metric),
            "inputs_hash": str_attr(v.inputs_hash),
            "computed_at": str_attr(v.computed_at),
            "window_start": str_attr(v.window_start),
            "window_end": str_attr(v.window_end),
            "input_count": num_attr(v.input_count),
            "sample_event_ids": {"L": [str_attr(e) for e in v.sample_event_ids]},
            "replay_ids": {"L": [str_attr(r) for r in v.replay_ids]},
        }
        value = _number(v.value)
        item["value"] = value if value is not None else {"NULL": True}
        return item

    def _store_manifest(self, inputs_hash: str, manifest: Sequence[ManifestEntry]) -> None:
        if inputs_hash in self._stored:
            return
        key = f"{MANIFEST_PREFIX}{inputs_hash}.json.gz"
        rows = [[e.event_id, e.payload_sha, e.ingest_time, e.ingest_lag_ms] for e in manifest]
        rows.sort(key=lambda r: str(r[0]))
        doc = {"inputs_hash": inputs_hash, "columns": MANIFEST_COLUMNS, "rows": rows}
        # mtime 0: the same manifest is the same bytes. Level 1: hex digests barely compress further.
        data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode("ascii"), 1, mtime=0)
        for attempt in range(5):
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    IfNoneMatch="*",
                    ServerSideEncryption="AES256",
                    ContentType="application/gzip",
                    Metadata={"entries": str(len(rows))},
                )
                break
            except ClientError as exc:
                code = error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    break  # stored before: the same inputs, so the same manifest
                if code == "ConditionalRequestConflict" and attempt < 4:  # a concurrent put of the key
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise store_error(f"store the input manifest {key}", exc) from None
            except BotoCoreError as exc:
                raise store_error(f"store the input manifest {key}", exc) from None
        if len(self._stored) > 10_000:
            self._stored.clear()
        self._stored.add(inputs_hash)

    # -- the original kit's versions (read-only) ---------------------------------------------------------

    def _legacy_items(self, entity_id: str, day: str) -> list[dict[str, Any]]:
        """The original kit's items of one (entity, day), in time order (its seconds, read as numbers)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": str_attr(_pk(entity_id)),
                ":prefix": str_attr(_legacy_prefix(day)),
            },
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            with aws(f"read the original kit's aggregates of {entity_id!r} on {day}"):
                page = self.ddb.query(**kwargs)
            items += page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(items, key=lambda i: (_legacy_seconds(i), str(value_of(i, "SK"))))

    def _legacy_keyed(self, entity_id: str, day: str) -> dict[str, list[tuple[str, AggregateVersion]]]:
        """The original kit's versions of one (entity, day) by metric, numbered 1..L in time order, each
        with its item's SK."""
        if not _DAY.match(day):
            return {}
        chains: dict[str, list[tuple[str, AggregateVersion]]] = {}
        for item in self._legacy_items(entity_id, day):
            chain = chains.setdefault(_legacy_metric(item), [])
            version = _legacy_version(item, entity_id, day, chain[-1][1] if chain else None)
            chain.append((str(value_of(item, "SK")), version))
        return chains

    def _legacy(self, entity_id: str, day: str) -> dict[str, list[AggregateVersion]]:
        return {m: [v for _, v in chain] for m, chain in self._legacy_keyed(entity_id, day).items()}


def _legacy_seconds(item: dict[str, Any]) -> float:
    tail = str(value_of(item, "SK")).rsplit("#", 1)[-1]
    try:
        return float(tail)
    except ValueError:
        return math.inf


def _legacy_metric(item: dict[str, Any]) -> str:
    # The original kit computed one metric, the seed's daily count; an item without a name is that one.
    return str(value_of(item, "metric_name") or "daily_event_count")


def _legacy_time(value: Any, fallback: str) -> str:
    if isinstance(value, str):
        try:
            return fmt(parse_iso(value))
        except TimeFormatError:
            pass
    return fallback


def _legacy_version(
    item: dict[str, Any], entity_id: str, day: str, previous: AggregateVersion | None
) -> AggregateVersion:
    """One of the original kit's items as a version (see the module docstring for what it lacks)."""
    metric = _legacy_metric(item)
    seconds = _legacy_seconds(item)
    stamped = (
        fmt(datetime.fromtimestamp(seconds, tz=UTC)) if math.isfinite(seconds) else f"{day}T00:00:00.000Z"
    )
    start = f"{day}T00:00:00.000Z"
    end = f"{(date.fromisoformat(day) + timedelta(days=1)).isoformat()}T00:00:00.000Z"
    value = value_of(item, "value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        value = None
    count = value_of(item, "input_count")
    count = count if isinstance(count, int) else 0
    definition = (
        MetricSpec(name=metric, kind=MetricKind.COUNT)
        if _METRIC.match(metric)
        else MetricSpec.model_construct(name=metric, kind=MetricKind.COUNT)
    )
    samples = item.get("sample_event_ids", {})
    if "L" in samples:
        sample_ids = [str(next(iter(c.values()))) for c in samples["L"]]
    else:
        sample_ids = [str(s) for s in samples.get("SS", [])]
    return AggregateVersion(
        entity_id=entity_id,
        day=day,
        metric=metric,
        version=previous.version + 1 if previous else 1,
        value=value,
        input_count=count,
        values_used=count,
        inputs_hash=str(value_of(item, "inputs_hash") or ""),
        definition=definition,
        definition_hash=LEGACY_DEFINITION_HASH,
        computed_at=_legacy_time(value_of(item, "computed_at"), stamped),
        window_start=_legacy_time(value_of(item, "window_start"), start),
        window_end=_legacy_time(value_of(item, "window_end"), end),
        previous_version=previous.version if previous else None,
        previous_value=previous.value if previous else None,
        sample_event_ids=sample_ids,
    )
