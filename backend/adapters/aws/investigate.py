"""Bulk reads on AWS: :class:`backend.ports.InvestigationIndex` over the events table and
:class:`backend.ports.RawCatalog` over the raw bucket.

Scans reuse the index queries of :class:`AwsStore` (the same keys, order, legacy handling) and hand out
lean receipts. Per-day counts and a partition-day's lag come from the rollups when the stack keeps them
(``backend.adapters.aws.rollup_reads``: O(days x hours) items); otherwise per-day counts read only the
attributes they need (a projection) from every lag-index shard of the day and add up client-side: DynamoDB
has no GROUP BY. Raw keys are checked by listing the key range of each event-day prefix when many keys
share it (one ListObjectsV2 call per 1,000 keys; a listing that would cost more than a HEAD per key left
hands those keys to HEAD requests) and by HEAD requests otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import NOT_FOUND_CODES, aws, error_code, store_error
from backend.adapters.aws.event_items import ACCEPTED_RECEIPT, entity_pks, lag_pks
from backend.adapters.aws.legacy import LegacyKind
from backend.adapters.aws.resources import LAG_INDEX
from backend.adapters.aws.rollup_reads import DaySum, RollupReader, day_count, lag_rollup
from backend.adapters.aws.store import AwsStore
from backend.errors import InvalidRequest
from backend.model import EventRecord, IngestStatus, Page, ReplayRequest
from backend.ports import DayCount, LagRollup, Receipt, ReplaySelection
from backend.replay_selection import planned_receipts, select_by_scans
from backend.times import TimeFormatError, fmt, parse_day, parse_iso

# A prefix holding at least this many of the asked keys is listed (its key range) instead of HEAD per key.
LIST_THRESHOLD = 20
LIST_PAGE = 1000  # keys per ListObjectsV2 page (S3's largest)


def _receipt(r: EventRecord) -> Receipt:
    return Receipt(
        r.event_id,
        r.receipt == ACCEPTED_RECEIPT,  # the original kit's rows read as receipt "0": each is its event's
        r.source,
        r.event_type,
        r.entity_id,
        r.event_time,
        r.ingest_time,
        r.ingest_lag_ms,
        r.clock_skew,
        r.payload_sha,
        r.s3_key,
        r.s3_bucket,
        r.receipt,
        r.payload,
    )


def _day(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(parse_day(text, what=what)).replace(tzinfo=UTC)
    except (TimeFormatError, TypeError) as exc:
        raise InvalidRequest(str(exc)) from None


def _grace(grace_ms: int) -> int:
    if not isinstance(grace_ms, int) or grace_ms < 0:
        raise InvalidRequest(
            f"the grace period must be a whole number of milliseconds >= 0, got {grace_ms!r}"
        )
    return grace_ms


class _Tally:
    """Counts of one event day, built item by item."""

    def __init__(self) -> None:
        self.accepted = self.late = self.duplicate = 0
        self.first_late: str | None = None
        self.last_late: str | None = None

    def add(self, accepted: bool, ingest_time: str, late_from: str) -> None:
        if not accepted:
            self.duplicate += 1
            return
        self.accepted += 1
        if ingest_time >= late_from:
            self.late += 1
            self.first_late = min(self.first_late or ingest_time, ingest_time)
            self.last_late = max(self.last_late or ingest_time, ingest_time)

    def count(self, day: str) -> DayCount:
        return DayCount(day, self.accepted, self.late, self.duplicate, self.first_late, self.last_late)


def _always(day: str) -> Callable[[dict[str, Any]], str | None]:
    """A ``day_of`` for items that all belong to ``day`` (one partition)."""
    return lambda _item: day


def _late_from(day: str, grace_ms: int) -> str:
    """The first ingest time that counts as late for an event of ``day``."""
    return fmt(datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1, milliseconds=grace_ms))


class AwsInvestigation:
    """:class:`backend.ports.InvestigationIndex` on the events table."""

    _PROJECTION = "#r, #s, event_id, event_time, ingest_time"
    _NAMES: ClassVar[dict[str, str]] = {"#r": "receipt", "#s": "status"}

    def __init__(self, store: AwsStore) -> None:
        self._store = store
        self._rollups = RollupReader(store.ddb, store.t.events)

    def lag_rollup(self, source: str, event_type: str, day: str, *, late_ms: int) -> LagRollup | None:
        _day(day, "day")
        return lag_rollup(self._rollups, self._store, source, event_type, day, late_ms)

    def _from_rollups(
        self, sums: dict[str, DaySum], grace: int, scan: Callable[[str, str], list[DayCount]]
    ) -> list[DayCount]:
        """Day counts from rollup sums; a day whose late count the buckets cannot settle is scanned."""
        out: list[DayCount] = []
        for day in sorted(sums):
            total = sums[day]
            if not (total.accepted or total.duplicate):
                continue
            count = day_count(day, total, grace)
            if count is None:
                next_day = (_day(day, "day") + timedelta(days=1)).date().isoformat()
                out += scan(day, next_day)
            else:
                out.append(count)
        return out

    def _tally(
        self,
        items: Iterable[dict[str, Any]],
        day_of: Callable[[dict[str, Any]], str | None],
        tallies: dict[str, _Tally],
        grace: int,
    ) -> None:
        """Add ``items`` (projected) to the tallies of their days (``day_of``; None: not counted). The
        original kit's DUPLICATE rows are held back and resolved at the end (one dedupe read for them): an
        overwritten acceptance counts as an accepted event and a duplicate."""
        held: list[tuple[str, dict[str, Any]]] = []
        accepted_ids: set[str] = set()
        for item in items:
            day = day_of(item)
            if day is None:
                continue
            receipt = value_of(item, "receipt")
            if receipt is None:
                if value_of(item, "status") == "DUPLICATE":
                    held.append((day, item))
                    continue
                accepted_ids.add(str(value_of(item, "event_id")))
            tally = tallies.setdefault(day, _Tally())
            accepted = receipt is None or receipt == ACCEPTED_RECEIPT
            tally.add(accepted, fmt(parse_iso(value_of(item, "ingest_time"))), _late_from(day, grace))
        if not held:
            return
        resolution = self._store.legacy_rows.resolve([i for _, i in held])
        resolution.accepted_ids |= accepted_ids
        for day, item in held:
            tally = tallies.setdefault(day, _Tally())
            if resolution.kind(item) is LegacyKind.OVERWRITTEN:
                tally.add(True, resolution.first_ingest(item), _late_from(day, grace))
            tally.add(False, fmt(parse_iso(value_of(item, "ingest_time"))), _late_from(day, grace))

    def scan_entity(
        self,
        entity_id: str,
        start: str,
        end: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        status = IngestStatus.ACCEPTED if accepted_only else None
        page = self._store.query_entity(entity_id, start, end, status=status, limit=limit, after=after)
        return Page[Receipt](items=[_receipt(r) for r in page.items], next_cursor=page.next_cursor)

    def scan_partition(
        self,
        source: str,
        event_type: str,
        day: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        status = IngestStatus.ACCEPTED if accepted_only else None
        page = self._store.query_partition(source, event_type, day, status=status, limit=limit, after=after)
        return Page[Receipt](items=[_receipt(r) for r in page.items], next_cursor=page.next_cursor)

    def day_counts_entity(
        self, entity_id: str, first_day: str, end_day: str, *, grace_ms: int = 0, late: bool = True
    ) -> list[DayCount]:
        # ``late=False`` saves nothing here: the rollups and the scan count lateness at no extra read.
        lo, hi = fmt(_day(first_day, "first day")), fmt(_day(end_day, "end day"))
        grace = _grace(grace_ms)
        if lo < hi and self._rollups.ready():
            sums = self._rollups.entity_days(entity_id, lo[:10], hi[:10], self._store.read_entity_shards())
            return self._from_rollups(
                sums, grace, lambda a, b: self._scan_counts_entity(entity_id, a, b, grace)
            )
        return self._scan_counts_entity(entity_id, first_day, end_day, grace)

    def _scan_counts_entity(self, entity_id: str, first_day: str, end_day: str, grace: int) -> list[DayCount]:
        lo, hi = fmt(_day(first_day, "first day")), fmt(_day(end_day, "end day"))
        tallies: dict[str, _Tally] = {}
        if lo >= hi:
            return []
        # Every key of the entity (each shard's and the unsharded one): counts need no order.
        items = (
            item
            for pk in entity_pks(entity_id, self._store.read_entity_shards())
            for item in self._store.query_items(
                f"count the events of entity {entity_id!r}",
                KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": str_attr(pk),
                    ":lo": str_attr(f"TS#{lo}"),
                    ":hi": str_attr(f"TS#{hi}"),
                },
                ProjectionExpression=self._PROJECTION,
                ExpressionAttributeNames=self._NAMES,
            )
        )

        def day_of(item: dict[str, Any]) -> str | None:
            event_time = fmt(parse_iso(value_of(item, "event_time")))
            return event_time[:10] if lo <= event_time < hi else None

        self._tally(items, day_of, tallies, grace)
        return [tallies[d].count(d) for d in sorted(tallies)]

    def select_replay(
        self,
        request: ReplayRequest,
        *,
        sample: int,
        progress: Callable[[int, int | None], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        keep: int = 0,
    ) -> ReplaySelection:
        """DynamoDB has no aggregate to ask: the selection is made receipt by receipt (the generic path),
        its raw keys checked by prefix listings; up to ``keep`` planned receipts are kept as they go by."""
        return select_by_scans(
            self,
            AwsCatalog(self._store),
            request,
            sample=sample,
            progress=progress,
            should_stop=should_stop,
            keep=keep,
        )

    def replay_receipts(
        self, request: ReplayRequest, *, missing: frozenset[str] | None = None
    ) -> Iterator[Receipt]:
        # With the keys the check found missing, no HEAD or listing again: one pass of raw checks a replay.
        return planned_receipts(self, AwsCatalog(self._store), request, missing=missing)

    def day_counts_partition(
        self, source: str, event_type: str, first_day: str, end_day: str, *, grace_ms: int = 0
    ) -> list[DayCount]:
        day, end = _day(first_day, "first day"), _day(end_day, "end day")
        grace = _grace(grace_ms)
        if day < end and self._rollups.ready():
            sums = self._rollups.partition_days(
                source, event_type, day.date().isoformat(), end.date().isoformat()
            )
            return self._from_rollups(
                sums, grace, lambda a, b: self._scan_counts_partition(source, event_type, a, b, grace)
            )
        return self._scan_counts_partition(source, event_type, first_day, end_day, grace)

    def _scan_counts_partition(
        self, source: str, event_type: str, first_day: str, end_day: str, grace: int
    ) -> list[DayCount]:
        """Per-day counts read from every receipt of each day (stacks without rollups)."""
        day, end = _day(first_day, "first day"), _day(end_day, "end day")
        out: list[DayCount] = []
        shards = self._store.read_lag_shards() if day < end else 1
        while day < end:
            text = day.date().isoformat()
            # Every key of the day (each lag shard's and the unsharded one): counts need no order.
            items = (
                item
                for pk in lag_pks(source, event_type, text, shards)
                for item in self._store.query_items(
                    f"count partition {source}/{event_type}/{text}",
                    IndexName=LAG_INDEX.name,
                    KeyConditionExpression="GSI1PK = :pk",
                    ExpressionAttributeValues={":pk": str_attr(pk)},
                    ProjectionExpression=self._PROJECTION,
                    ExpressionAttributeNames=self._NAMES,
                )
            )
            tallies: dict[str, _Tally] = {}
            self._tally(items, _always(text), tallies, grace)
            tally = tallies.get(text, _Tally())
            if tally.accepted or tally.duplicate:
                out.append(tally.count(text))
            day += timedelta(days=1)
        return out


def _prefix(key: str) -> str:
    """The event-day prefix of a raw key (``raw/source=../event_type=../event_date=../``), else its folder."""
    marker = key.find("/event_date=")
    if marker >= 0:
        end = key.find("/", marker + 1)
        if end >= 0:
            return key[: end + 1]
    return key.rsplit("/", 1)[0] + "/"


def _id_position(prefix: str, key: str) -> float | None:
    """Where ``key`` lies in the event-id space of its prefix (0..1), if it is ``<prefix>event_id=<hex>``
    (our raw keys; the original kit's have more folders after the day, not in id order)."""
    rest = key[len(prefix) :]
    if not rest.startswith("event_id="):
        return None
    try:
        return int(rest[9:25], 16) / 16**16
    except ValueError:
        return None


def _pages_left(prefix: str, first: str, listed_to: str, last: str, pages: int) -> float:
    """Listing pages still needed to reach ``last``, at the pace the ``pages`` so far went from ``first``
    to ``listed_to`` (0 when it cannot be told: the listing goes on)."""
    a, b, c = (_id_position(prefix, k) for k in (first, listed_to, last))
    if a is None or b is None or c is None or b <= a:
        return 0.0
    return pages * (c - b) / (b - a)


class AwsCatalog:
    """:class:`backend.ports.RawCatalog` on the raw bucket."""

    def __init__(self, store: AwsStore) -> None:
        self._store = store

    def missing(self, keys: Sequence[str]) -> set[str]:
        wanted = sorted(set(keys))
        groups: dict[str, list[str]] = {}
        for key in wanted:
            groups.setdefault(_prefix(key), []).append(key)
        listed = [g for g in groups.values() if len(g) >= LIST_THRESHOLD]
        single = [k for g in groups.values() if len(g) < LIST_THRESHOLD for k in g]
        found: set[str] = set()
        for present, unresolved in self._store.map_concurrently(self._listed, listed):
            found |= present
            single += unresolved
        for key, there in zip(single, self._store.map_concurrently(self._exists, single), strict=True):
            if there:
                found.add(key)
        return set(wanted) - found

    def _listed(self, group: list[str]) -> tuple[set[str], list[str]]:
        """The keys of ``group`` (sorted, one prefix) that exist, from a listing of their key range; and
        the keys the listing left to HEAD requests.

        A listing pays one call per 1,000 keys of the range, asked or not. A day's prefix at 10,000
        events/s holds 864M keys, among which an entity's few are spread (keys end in the event id, a
        hash): listing their range would cost far more than a HEAD each. So after each page the listing
        estimates the pages still to go from how much of the id space the pages so far covered, and hands
        the rest of the keys to HEAD requests when those are fewer."""
        prefix, first, last = _prefix(group[0]), group[0], group[-1]
        present: set[str] = set()
        wanted = set(group)
        kwargs: dict[str, Any] = {"Bucket": self._store.t.bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
        # StartAfter is exclusive: start at a prefix of the first key, which sorts just before it.
        kwargs["StartAfter"] = first[:-1]
        pages = 0
        while True:
            with aws(f"list raw events under {prefix}"):
                page = self._store.s3.list_objects_v2(**kwargs)
            pages += 1
            listed_to = first
            for obj in page.get("Contents", []):
                key = obj["Key"]
                listed_to = key
                if key in wanted:
                    present.add(key)
                if key >= last:
                    return present, []
            if not page.get("IsTruncated"):
                return present, []
            rest = [k for k in group if k > listed_to]
            if _pages_left(prefix, first, listed_to, last, pages) > len(rest):
                return present, rest
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _exists(self, key: str) -> bool:
        try:
            self._store.s3.head_object(Bucket=self._store.t.bucket, Key=key)
            return True
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return False
            raise store_error(f"read raw event {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read raw event {key}", exc) from None

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(keys))
        out: dict[str, bytes] = {}
        for key, data in zip(unique, self._store.map_concurrently(self._store.get, unique), strict=True):
            if data is not None:
                out[key] = data
        return out
