"""The latest versions of many windows at once (:class:`backend.ports.LatestVersions`) on the aggregates
table, for a dry run's projection and the processor: O(pages), not a Query per (window, metric).

1. Which windows have versions at all: on a table that keeps window heads, one ``BatchGetItem`` per 100
   windows (``backend.adapters.aws.window_heads``); a window without a head has none, and costs nothing
   more. On a table without heads every window is taken as possibly having versions.
2. The windows left, grouped by entity: one ``Query`` per entity over the span of its days
   (``SK BETWEEN DAY#<first># AND DAY#<last>#~``, one page per MB), which lists every version of every
   metric of those days; the highest number of each (day, metric) is the latest. Days far apart (a span of
   more than 4 days per asked day) are asked one by one.

A day holding the original kit's versions (``DAY#<d>#VER#<seconds>``) is answered by
:meth:`DynamoAggregates.latest` for each metric that has none of ours (the original kit's numbering needs
its whole chain); such stacks are read-only and small.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.model import SOURCE_PATTERN, AggregateVersion

Window = tuple[str, str]
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_METRIC = re.compile(SOURCE_PATTERN)


def spans(days: Sequence[str]) -> list[tuple[str, str]]:
    """The (first, last) day ranges to ask for ``days`` of one entity: one range over all of them, unless
    they are so far apart that it would hold mostly other days (then one range per day)."""
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    # Reading a day nobody asked for costs read units, another range costs a call: up to 4 days per asked.
    if (last - first).days < 4 * len(set(days)):
        return [(first.isoformat(), last.isoformat())]
    return [(d, d) for d in sorted(set(days))]


def latest_many(
    store: Any, windows: Sequence[Window], metrics: Sequence[str]
) -> dict[tuple[str, str, str], AggregateVersion | None]:
    """What ``store.latest`` (a :class:`backend.adapters.aws.aggregates.DynamoAggregates`) answers for
    each window and metric, keyed ``(entity, day, metric)``, read as the module docstring says."""
    wanted = [w for w in dict.fromkeys(windows) if _DAY.match(w[1])]
    names = [m for m in dict.fromkeys(metrics) if _METRIC.match(m)]
    out: dict[tuple[str, str, str], AggregateVersion | None] = {
        (e, d, m): None for e, d in dict.fromkeys(windows) for m in metrics
    }
    if not wanted or not names:
        return out
    having = store.windows_with_versions(wanted) if store.heads.kept() else set(wanted)
    days: dict[str, list[str]] = {}
    for entity_id, day in wanted:
        if (entity_id, day) in having:
            days.setdefault(entity_id, []).append(day)
    for entity_id, some in days.items():
        asked = set(some)
        best: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        legacy: set[str] = set()
        for lo, hi in spans(some):
            for item in _items(store, f"ENTITY#{entity_id}", lo, hi):
                parsed = _parse(str(value_of(item, "SK")))
                if parsed is None:
                    continue
                day, metric, version = parsed
                if day not in asked:
                    continue
                if metric is None:
                    legacy.add(day)
                elif metric in names and version > best.get((day, metric), (0, {}))[0]:
                    best[(day, metric)] = (version, item)
        for day in asked:
            for metric in names:
                if (day, metric) in best:
                    record = value_of(best[(day, metric)][1], "record")
                    out[(entity_id, day, metric)] = AggregateVersion.model_validate_json(record)
                elif day in legacy:
                    out[(entity_id, day, metric)] = store.latest(entity_id, day, metric)
    return out


def _items(store: Any, partition: str, lo: str, hi: str) -> list[dict[str, Any]]:
    """Every item of ``partition`` whose key starts with a day in ``[lo, hi]``: versions, the original
    kit's versions and window heads (told apart by :func:`_parse`)."""
    kwargs: dict[str, Any] = {
        "TableName": store.table,
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": {
            ":pk": str_attr(partition),
            ":lo": str_attr(f"DAY#{lo}#"),
            # "~" sorts after every character a key holds after the day ("#", letters, digits).
            ":hi": str_attr(f"DAY#{hi}#~"),
        },
        "ConsistentRead": True,
    }
    items: list[dict[str, Any]] = []
    while True:
        with aws(f"read the latest versions of {partition[7:]!r} from {lo} to {hi}"):
            page = store.ddb.query(**kwargs)
        items += page.get("Items", [])
        if not page.get("LastEvaluatedKey"):
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _parse(sk: str) -> tuple[str, str | None, int] | None:
    """(day, metric, version) of one of our version keys, (day, None, 0) of one of the original kit's,
    None for anything else (a window head)."""
    if not sk.startswith("DAY#") or len(sk) < 15:
        return None
    day, rest = sk[4:14], sk[14:]
    if rest.startswith("#VER#"):
        return day, None, 0
    if not rest.startswith("#MET#"):
        return None
    metric, marker, number = rest[5:].rpartition("#VER#")
    if not marker or not number.isdigit():
        return None
    return day, metric, int(number)
