"""The two bucket scales of the rollups (``docs/aws.md``, "Rollups"), shared by the store that writes
them and the services that read them.

* **Lag** (``L`` buckets): log scale with 16 buckets per power of two. A lag below 32 ms is its own
  bucket; above, a bucket is ``[m * w, (m + 1) * w)`` with ``w`` a power of two and ``16 <= m < 32``. A
  percentile read from the buckets is reported as ``lo + w // 2`` (capped at the exact maximum), within
  ``w / 2`` of the true value, which is at least ``16 * w``: the relative error is at most
  :data:`LAG_ERROR` = 1/32 (3.125 %), and zero below 32 ms. Integer arithmetic only, so a lag falls in the
  same bucket on every machine.
* **Arrival** (``A`` buckets): how long after the end of its event day an event arrived, on a calendar
  scale: whole seconds below a minute, whole minutes below 2 hours, whole hours below 48 hours, whole days
  beyond. A grace period of whole seconds, minutes, hours or days ("90s", "15m", "1h", "2d") is always a
  bucket boundary, so the late count for it is exact from the buckets alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SUB_BITS = 4  # 2^4 = 16 buckets per power of two
EXACT_BELOW = 1 << (SUB_BITS + 1)  # 32: smaller lags are their own bucket
LAG_ERROR = 1 / (1 << (SUB_BITS + 1))  # 1/32: the relative error bound of a percentile from the buckets

_SECOND, _MINUTE, _HOUR, _DAY = 1000, 60_000, 3_600_000, 86_400_000
# (below, unit): an arrival offset below ``below`` is rounded down to a whole ``unit``.
_ARRIVAL_SCALE = ((_MINUTE, _SECOND), (2 * _HOUR, _MINUTE), (48 * _HOUR, _HOUR))


def lag_bucket(lag_ms: int) -> int:
    """The lower bound of the lag bucket of ``lag_ms`` (>= 0)."""
    if lag_ms < EXACT_BELOW:
        return max(lag_ms, 0)
    shift = lag_ms.bit_length() - (SUB_BITS + 1)
    return (lag_ms >> shift) << shift


def lag_width(lo: int) -> int:
    """The width of the lag bucket whose lower bound is ``lo``."""
    if lo < EXACT_BELOW:
        return 1
    return 1 << (lo.bit_length() - (SUB_BITS + 1))


def arrival_bucket(offset_ms: int) -> int:
    """The lower bound of the arrival bucket of an event that arrived ``offset_ms`` (>= 0) after the end
    of its event day."""
    for below, unit in _ARRIVAL_SCALE:
        if offset_ms < below:
            return offset_ms - offset_ms % unit
    return offset_ms - offset_ms % _DAY


def arrival_width(lo: int) -> int:
    """The width of the arrival bucket whose lower bound is ``lo``."""
    for below, unit in _ARRIVAL_SCALE:
        if lo < below:
            return unit
    return _DAY


def count_from(buckets: Mapping[int, int], threshold: int, *, arrival: bool) -> tuple[int, int, int]:
    """``(count, straddling, straddling_lo)``: the events in buckets that start at or above ``threshold``;
    the events of the bucket that holds ``threshold`` strictly inside (they may be either side of it: 0
    when ``threshold`` is a boundary); and that bucket's lower bound."""
    width = arrival_width if arrival else lag_width
    count = straddling = 0
    straddling_lo = -1
    for lo, n in buckets.items():
        if lo >= threshold:
            count += n
        elif lo + width(lo) > threshold:
            straddling, straddling_lo = n, lo
    return count, straddling, straddling_lo


def percentile(buckets: Mapping[int, int], pct: float, maximum: int | None = None) -> int | None:
    """The nearest-rank percentile ``pct`` of the lags counted in ``buckets`` (lower bound -> count),
    within :data:`LAG_ERROR` of the exact one; capped at ``maximum`` (the exact largest lag) if given."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = max(1, -(-total * pct // 100))  # as backend.services.lag.percentile: ceil(n * pct / 100)
    seen = 0
    for lo in sorted(buckets):
        seen += buckets[lo]
        if seen >= rank:
            value = lo + lag_width(lo) // 2
            return min(value, maximum) if maximum is not None else value
    raise AssertionError("unreachable: the ranks add up to the total")  # pragma: no cover


def merge(parts: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The bucket counts of several histograms added up."""
    out: dict[int, int] = {}
    for part in parts:
        for lo, n in part.items():
            out[lo] = out.get(lo, 0) + n
    return out
