"""Time rules of the kit (DESIGN invariant 7), and the durations and day ranges users type and read.

Stored times are UTC strings with fixed millisecond precision, ``2025-12-28T23:59:59.000Z``, so that string
order is time order. Windows are half-open ``[start, end)``. Naive input is UTC; offsets are converted.
Durations are read with :func:`parse_duration` (``90s``, ``1h30m``) and shown with :func:`human_ms`;
:func:`day_range` lists the days of a half-open range of days.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from backend.errors import InvalidRequest

# Event times outside this range are rejected: they are almost always a unit or clock bug (epoch seconds read
# as milliseconds, a zeroed struct), and bounding them keeps every stored time a 4-digit year.
EVENT_TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
EVENT_TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)

# Longest range of days a query (gaps, a source/type replay) covers in one call.
MAX_GAP_DAYS = 3660

_HAS_CLOCK_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class TimeFormatError(ValueError):
    """A time string that the kit cannot read; the message says why, in words for the user."""


def parse_iso(text: str, *, what: str = "time") -> datetime:
    """Parse an ISO-8601 date-time with a clock time; ``Z``, offsets and naive (= UTC) are accepted.

    Returns an aware UTC datetime. Raises :class:`TimeFormatError` naming ``what`` on anything else.
    """
    if not isinstance(text, str):
        raise TimeFormatError(f"{what} must be an ISO-8601 string, got {type(text).__name__}")
    if not _HAS_CLOCK_TIME.match(text):
        raise TimeFormatError(
            f"{what} {text[:64]!r} is not an ISO-8601 date-time with a clock time "
            "(expected e.g. 2025-12-28T23:59:59Z)"
        )
    if not (text.isascii() and text.isprintable()):
        # fromisoformat reads a NUL as the end of the text ("...59Z\x00junk" parses): refuse what no
        # ISO-8601 date-time can hold before it is read.
        raise TimeFormatError(
            f"{what} {text[:64]!r} is not a valid ISO-8601 date-time "
            "(it holds characters other than ASCII letters, digits and punctuation)"
        )
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        # The "Invalid isoformat string" message quotes the whole text, however long: say it once, cut.
        detail = "" if str(exc).startswith("Invalid isoformat string") else f" ({str(exc)[:120]})"
        raise TimeFormatError(f"{what} {text[:64]!r} is not a valid ISO-8601 date-time{detail}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise TimeFormatError(f"{what} {text[:64]!r} is out of range once converted to UTC") from None


def parse_event_time(text: str) -> datetime:
    """Parse an event's ``event_time`` and check it lies in the supported range."""
    value = parse_iso(text, what="event_time")
    if not (EVENT_TIME_MIN <= value < EVENT_TIME_MAX):
        raise TimeFormatError(
            f"event_time {text[:64]!r} is outside the supported range "
            f"{EVENT_TIME_MIN:%Y-%m-%d} .. {EVENT_TIME_MAX - timedelta(days=1):%Y-%m-%d} (UTC)"
        )
    return value


def identity_iso(value: datetime) -> str:
    """The time as the original kit put it into the event identity: isoformat with ``+00:00`` -> ``Z``."""
    return value.isoformat().replace("+00:00", "Z")


def fmt(value: datetime) -> str:
    """Fixed-precision UTC form used in every stored time: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if value.tzinfo is UTC:  # the usual case (parsed and clock times): no offset to look at
        return value.isoformat(timespec="milliseconds")[:23] + "Z"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset() != timedelta(0):
        value = value.astimezone(UTC)
    # isoformat is C code and always writes a 4-digit year: "2025-12-28T23:59:59.123+00:00".
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


def parse_stored(text: str) -> datetime:
    """Read back a stored time (ours or the original kit's); always aware UTC."""
    return parse_iso(text)


def lag_ms(ingest_time: datetime, event_time: datetime) -> int:
    """Signed ingest lag in whole milliseconds (ingest minus event); callers clamp and flag negatives."""
    delta = ingest_time - event_time
    return (delta.days * 86_400_000) + (delta.seconds * 1000) + (delta.microseconds // 1000)


def parse_bound(text: str, *, what: str) -> datetime:
    """Parse a window bound given by a user: a date (midnight UTC) or a date-time."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        except ValueError as exc:
            raise TimeFormatError(f"{what} {text!r} is not a valid date ({exc})") from None
    return parse_iso(text, what=what)


def parse_day(text: str, *, what: str = "day") -> str:
    """Validate a ``YYYY-MM-DD`` day and return it unchanged."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("expected YYYY-MM-DD")
        date.fromisoformat(text)
    except ValueError as exc:
        raise TimeFormatError(f"{what} {text!r} is not a day ({exc})") from None
    return text


def day_range(first_day: str, end_day: str) -> list[str]:
    """The days of ``[first_day, end_day)``; InvalidRequest for malformed, reversed or too long ranges."""
    try:
        first = date.fromisoformat(parse_day(first_day, what="first day"))
        end = date.fromisoformat(parse_day(end_day, what="end day"))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    if end <= first:
        raise InvalidRequest(f"the range [{first_day}, {end_day}) holds no day: the end day is exclusive")
    if (end - first).days > MAX_GAP_DAYS:
        raise InvalidRequest(f"the range [{first_day}, {end_day}) is longer than {MAX_GAP_DAYS} days")
    return [(first + timedelta(days=i)).isoformat() for i in range((end - first).days)]


def parse_duration(text: str, *, what: str = "duration") -> int:
    """``90s``, ``15m``, ``1h30m``, ``2d``, ``250ms`` or a bare number of seconds, as milliseconds.

    Raises InvalidRequest (not TimeFormatError: a duration is a query parameter) naming ``what``."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+", cleaned):
        return int(cleaned) * 1000
    if not cleaned or _DURATION.sub("", cleaned):
        raise InvalidRequest(f"{what} {text!r} is not a duration (e.g. 90s, 15m, 1h30m, 2d)")
    return int(sum(float(n) * _UNITS_MS[unit] for n, unit in _DURATION.findall(cleaned)))


def human_ms(ms: int) -> str:
    """A duration for people: ``850 ms``, ``42 s``, ``3m 05s``, ``2h 14m``, ``2d 03h``."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


class Clock:
    """The real clock. Services take a clock so that demos and backfills can set the ingest time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock(Clock):
    """A clock that stands still until moved; for demos, backfills and tests."""

    def __init__(self, start: datetime) -> None:
        self._now = start if start.tzinfo else start.replace(tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, value: datetime) -> None:
        self._now = value if value.tzinfo else value.replace(tzinfo=UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta
