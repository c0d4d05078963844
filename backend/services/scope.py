"""The scope of a replay request: its checks and stored form (:func:`normalize`), and its one-line
description for people (:func:`describe_scope`).

Both the replay service and the version explanations (which name the scope of the replay behind a
version) use these; they depend on the model and the time rules only.
"""

from __future__ import annotations

from backend.errors import InvalidRequest
from backend.model import IngestStatus, ReplayRequest
from backend.times import TimeFormatError, day_range, fmt, parse_bound

# The largest ``limit`` a replay request may ask for.
MAX_LIMIT = 1_000_000


def describe_scope(request: ReplayRequest) -> str:
    """The scope in one line, for people: ``entity user_1, [start, end)`` or ``web/click, days [a, b)``."""
    filters = []
    if request.entity_id is not None:
        scope = f"entity {request.entity_id!r}, [{request.start_time}, {request.end_time})"
        if request.source:
            filters.append(f"source={request.source}")
        if request.event_type:
            filters.append(f"event_type={request.event_type}")
    else:
        scope = f"{request.source}/{request.event_type}, event days [{request.start_day}, {request.end_day})"
    if request.status:
        filters.append(f"status={request.status.value}")
    extra = f" ({', '.join(filters)})" if filters else ""
    dup = "one message per receipt" if request.include_duplicates else "duplicates excluded"
    return f"{scope}{extra}, limit {request.limit:,}, {dup}"


def normalize(request: ReplayRequest) -> ReplayRequest:
    """Check a request's scope and put its times in the stored form; InvalidRequest says what is wrong."""
    if request.limit > MAX_LIMIT:
        raise InvalidRequest(f"limit is at most {MAX_LIMIT:,}")
    if request.status is IngestStatus.REJECTED:
        raise InvalidRequest("rejected requests are not in the index and cannot be replayed")
    if request.entity_id is not None:
        if request.start_day is not None or request.end_day is not None:
            raise InvalidRequest("an entity replay takes start_time/end_time, not start_day/end_day")
        if request.start_time is None or request.end_time is None:
            raise InvalidRequest("an entity replay needs start_time and end_time (the window [start, end))")
        try:
            start = parse_bound(request.start_time, what="start_time")
            end = parse_bound(request.end_time, what="end_time")
        except TimeFormatError as exc:
            raise InvalidRequest(str(exc)) from None
        if start >= end:
            raise InvalidRequest("start_time must be before end_time (the window is [start, end))")
        return request.model_copy(update={"start_time": fmt(start), "end_time": fmt(end)})
    if request.source is None or request.event_type is None:
        raise InvalidRequest(
            "choose a scope: entity_id with start_time/end_time, or source and event_type with "
            "start_day/end_day"
        )
    if request.start_time is not None or request.end_time is not None:
        raise InvalidRequest("a source/type replay takes start_day/end_day (event days), not times")
    if request.start_day is None or request.end_day is None:
        raise InvalidRequest("a source/type replay needs start_day and end_day (the days [start, end))")
    day_range(request.start_day, request.end_day)  # checks them
    return request
