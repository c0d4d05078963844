"""The Gaps pane: events per day of an entity, or of a source/type, over a range of days; the short days
marked "never arrived" or "arrived late" (their events came, after the day ended)."""

from __future__ import annotations

from typing import Any, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from backend.errors import InvalidRequest
from backend.services.gaps import DayStatus, GapReport
from backend.times import EVENT_TIME_MAX, EVENT_TIME_MIN, fmt, human_ms, parse_duration
from pik_console.console.context import Context, add_days
from pik_console.console.render import num, stacked_bar, t
from pik_console.console.widgets import focus_now

BAR_WIDTH = 30
RANGE_DAYS = 14
STATUS_STYLE = {
    DayStatus.OK: "green",
    DayStatus.NEVER_ARRIVED: "bold red",
    DayStatus.ARRIVED_LATE: "bold yellow",
}


def verdict(report: GapReport) -> Text:
    scope = f"entity {report.entity_id}" if report.entity_id else f"{report.source}/{report.event_type}"
    text = Text(end="")
    text.append(t(f"{scope}, days [{report.first_day}, {report.end_day})", "bold"))
    text.append(
        f"  ·  expected ~{report.expected:,.0f}/day ({'given' if report.expected_given else 'median'}), "
        f"short below {report.min_ratio:.0%}, late after the day + {human_ms(report.grace_ms)}\n"
    )
    if report.never_arrived:
        text.append("never arrived: ", style="bold red")
        text.append(", ".join(report.never_arrived) + "   ")
    if report.arrived_late:
        text.append("arrived late: ", style="bold yellow")
        text.append(", ".join(report.arrived_late))
    if not (report.never_arrived or report.arrived_late):
        text.append("no short days", style="green")
    return text


class GapsPane(Vertical):
    class GapsRead(Message):
        def __init__(self, report: GapReport | None, error: str | None) -> None:
            super().__init__()
            self.report = report
            self.error = error

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._applied: Context | None = None
        self.report: GapReport | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-bar", id="gaps-form"):
            yield Input(
                placeholder="entity", id="gaps-entity", tooltip="An entity, or leave empty for a source/type"
            )
            yield Input(placeholder="source", id="gaps-source")
            yield Input(placeholder="type", id="gaps-type", tooltip="Event type")
            yield Input(placeholder="first day", id="gaps-first")
            yield Input(placeholder="end day (excl.)", id="gaps-end")
            yield Input(
                value="1h", placeholder="grace", id="gaps-grace", tooltip="Late after the day ends + this"
            )
        yield Static("", id="gaps-verdict", markup=False)
        yield DataTable(id="gaps-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        cast(Any, self.app).pane_mounted()  # mounted after the first frame: take the size's layout
        self.query_one("#gaps-table", DataTable).add_columns(
            "DAY", "EVENTS", "ON TIME", "LATE", "DUP", "STATUS", "ON TIME ▮ LATE"
        )

    def focus_main(self) -> None:
        focus_now(self.query_one("#gaps-table", DataTable))

    def focus_filter(self) -> None:
        self.query_one("#gaps-entity", Input).focus()

    def apply_context(self, ctx: Context) -> None:
        if ctx == self._applied:
            return
        self._applied = ctx
        # Without known bounds the fields stay empty and the worker picks the range (see _range).
        first = ctx.first_day
        end = add_days(ctx.last_day, 1) if ctx.last_day else None
        values = {
            "gaps-entity": ctx.entity or "",
            "gaps-source": "" if ctx.entity else (ctx.source or ""),
            "gaps-type": "" if ctx.entity else (ctx.event_type or ""),
            "gaps-first": first or "",
            "gaps-end": end or "",
        }
        for widget_id, value in values.items():
            self.query_one(f"#{widget_id}", Input).value = value
        self.reload()

    def reload(self) -> None:
        def value(widget_id: str) -> str | None:
            return self.query_one(f"#{widget_id}", Input).value.strip() or None

        first, end = value("gaps-first"), value("gaps-end")
        entity = value("gaps-entity")
        if not (entity or (value("gaps-source") and value("gaps-type"))):
            self.query_one("#gaps-verdict", Static).update(
                Text("Choose an entity, or a source and a type.", style="yellow")
            )
            return
        if bool(first) != bool(end):
            self.query_one("#gaps-verdict", Static).update(
                Text("Give both days, or neither (the range around the day in focus).", style="yellow")
            )
            return
        try:
            grace_ms = parse_duration(value("gaps-grace") or "1h", what="grace")
        except InvalidRequest as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self._read(first, end, entity, None if entity else value("gaps-source"),
                   None if entity else value("gaps-type"), grace_ms)  # fmt: skip

    @on(Input.Submitted, "#gaps-form Input")
    def _submitted(self) -> None:
        self.reload()

    def _range(self, entity: str | None, source: str | None, event_type: str | None) -> tuple[str, str]:
        """Days to show when none are given: the entity's whole history (two one-row queries: its first
        and its last event) within RANGE_DAYS of the day in focus, or two weeks around that day."""
        kit = cast(Any, self.app).kit
        day = cast(Any, self.app).context.day
        if entity is not None:
            index = kit.index
            lo, hi = fmt(EVENT_TIME_MIN), fmt(EVENT_TIME_MAX)
            first = index.query_entity(entity, lo, hi, limit=1).items
            last = index.query_entity(entity, lo, hi, limit=1, descending=True).items
            if first and last:
                a, b = first[0].day, last[0].day
                if day:
                    a, b = max(a, add_days(day, -RANGE_DAYS)), min(b, add_days(day, RANGE_DAYS))
                return a, add_days(max(a, b), 1)
        if day:
            return add_days(day, -7), add_days(day, 8)
        raise InvalidRequest("choose a first and an end day")

    @work(thread=True, exclusive=True, group="gaps", exit_on_error=False)
    def _read(
        self,
        first: str | None,
        end: str | None,
        entity: str | None,
        source: str | None,
        event_type: str | None,
        grace_ms: int,
    ) -> None:
        try:
            service = cast(Any, self.app).kit.gaps()
            if first is None or end is None:
                first, end = self._range(entity, source, event_type)

            def gaps(a: str, b: str) -> GapReport:
                return cast(
                    GapReport,
                    service.gaps(
                        a, b, entity_id=entity, source=source, event_type=event_type, grace_ms=grace_ms
                    ),
                )

            report = gaps(first, end)
            with_events = [d.day for d in report.days if d.events]
            if with_events and with_events[-1] < report.days[-1].day:
                # Days after the last one with events hold nothing yet: not gaps, not in the median.
                report = gaps(first, add_days(with_events[-1], 1))
            self.post_message(self.GapsRead(report, None))
        except Exception as exc:
            self.post_message(self.GapsRead(None, str(exc)))

    @on(GapsRead)
    def _show(self, message: GapsRead) -> None:
        if message.report is None:
            self.query_one("#gaps-verdict", Static).update(t(message.error, "yellow"))
            return
        r = self.report = message.report
        with self.prevent(Input.Changed):
            self.query_one("#gaps-first", Input).value = r.first_day
            self.query_one("#gaps-end", Input).value = r.end_day
        self.query_one("#gaps-verdict", Static).update(verdict(r))
        table = self.query_one("#gaps-table", DataTable)
        table.clear()
        top = max((d.events for d in r.days), default=0)
        context_day = cast(Any, self.app).context.day
        for n, d in enumerate(r.days):
            status = Text(d.status.value, style=STATUS_STYLE[d.status])
            if d.events == 0:
                status.append(" (missing)", style="bold red")
            table.add_row(
                t(d.day),
                num(d.events),
                num(d.on_time),
                num(d.late, "bold yellow" if d.late else ""),
                num(d.duplicates, "yellow" if d.duplicates else ""),
                status,
                stacked_bar([(d.on_time, "cyan"), (d.late, "yellow")], top, BAR_WIDTH),
                key=d.day,
            )
            if d.day == context_day:
                table.move_cursor(row=n)

    @on(DataTable.RowSelected, "#gaps-table")
    def _open_day(self, event: DataTable.RowSelected) -> None:
        r = self.report
        if r is None:
            return
        day = str(event.row_key.value)
        app = cast(Any, self.app)
        if r.entity_id:
            app.open_day(entity=r.entity_id, day=day)
        else:
            app.open_day(source=r.source, event_type=r.event_type, day=day)
