"""The Replay pane's scope form: the request its fields say, the fields a context or a request fills in.
Functions over the pane's widgets (found by id), so that the pane holds the work and this the form."""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select

from backend.errors import InvalidRequest
from backend.model import IngestStatus, ReplayRequest
from backend.times import TimeFormatError, fmt, parse_bound
from pik_console.console.context import Context, day_start, next_day


def context_values(ctx: Context) -> dict[str, str]:
    """The form's fields for a context: an entity's window, or a source/type's day (else nothing)."""
    if ctx.entity and ctx.window:
        start, end = ctx.window
        values = dict.fromkeys(("rp-source", "rp-type", "rp-first", "rp-endday"), "")
        values.update({"rp-entity": ctx.entity, "rp-start": start, "rp-end": end})
        return values
    if ctx.source and ctx.event_type and ctx.day:
        values = dict.fromkeys(("rp-entity", "rp-start", "rp-end"), "")
        values.update(
            {
                "rp-source": ctx.source,
                "rp-type": ctx.event_type,
                "rp-first": ctx.day,
                "rp-endday": next_day(ctx.day),
            }
        )
        return values
    return {}


def read_request(pane: Widget) -> ReplayRequest:
    """The request the form says; InvalidRequest names the field that is wrong."""

    def value(widget_id: str) -> str | None:
        return pane.query_one(f"#{widget_id}", Input).value.strip() or None

    status = pane.query_one("#rp-status", Select).value
    try:
        limit = int((value("rp-limit") or "500").replace(",", "").replace("_", ""))
    except ValueError:
        raise InvalidRequest("the limit is a whole number") from None
    entity = value("rp-entity")
    start, end = value("rp-start"), value("rp-end")
    try:
        if start and len(start) == 10 and end is None:
            end = day_start(next_day(start))
        start = fmt(parse_bound(start, what="from")) if start else None
        end = fmt(parse_bound(end, what="to")) if end else None
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    return ReplayRequest(
        entity_id=entity,
        start_time=start if entity else None,
        end_time=end if entity else None,
        source=value("rp-source"),
        event_type=value("rp-type"),
        start_day=None if entity else value("rp-first"),
        end_day=None if entity else value("rp-endday"),
        status=IngestStatus(status) if isinstance(status, str) and status else None,
        limit=max(limit, 1),
        include_duplicates=pane.query_one("#rp-dups", Checkbox).value,
    )


def fill(pane: Widget, r: ReplayRequest) -> None:
    """Put request ``r`` in the form (without the form's change events)."""
    values = {
        "rp-entity": r.entity_id,
        "rp-start": r.start_time,
        "rp-end": r.end_time,
        "rp-source": r.source,
        "rp-type": r.event_type,
        "rp-first": r.start_day,
        "rp-endday": r.end_day,
        "rp-limit": str(r.limit),
    }
    with pane.prevent(Input.Changed, Checkbox.Changed, Select.Changed):
        for widget_id, value in values.items():
            pane.query_one(f"#{widget_id}", Input).value = value or ""
        pane.query_one("#rp-status", Select).value = r.status.value if r.status else ""
        pane.query_one("#rp-dups", Checkbox).value = r.include_duplicates
