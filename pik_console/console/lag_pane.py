"""The Lag pane: the partitions of a day (source/type with counts), and for the chosen one its lag
statistics, an hourly histogram drawn in the terminal, and the largest-lag events first. The late
threshold is a field (and ``+``/``-`` double or halve it)."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from backend.errors import InvalidRequest
from backend.services.lag import LagReport
from backend.times import TimeFormatError, human_ms, parse_day, parse_duration
from pik_console.console.context import Context, day_start, next_day
from pik_console.console.render import num, t, title
from pik_console.console.widgets import focus_now

BLOCKS = " ▁▂▃▄▅▆▇█"
HISTOGRAM_ROWS = 8


def histogram(report: LagReport) -> Text:
    """Events per event hour as columns (late ones in red on top), hours 00-23 along the bottom."""
    by_hour = {h.hour: h for h in report.hours}
    top = max((h.count for h in report.hours), default=0)
    out = Text(end="")
    if top == 0:
        return Text("no accepted events", style="dim")
    levels = HISTOGRAM_ROWS * 8
    for row in range(HISTOGRAM_ROWS - 1, -1, -1):
        label = f"{top:>6,} " if row == HISTOGRAM_ROWS - 1 else ("     0 " if row == 0 else "       ")
        out.append(label, style="dim")
        for hour in range(24):
            h = by_hour.get(f"{hour:02d}")
            if h is None:
                out.append("   ")
                continue
            total = round(h.count / top * levels)
            on_time = round((h.count - h.late) / top * levels)
            if h.count and total == 0:
                total = 1
            fill = max(0, min(total - row * 8, 8))
            late_cell = row * 8 + max(fill, 1) / 2 > on_time
            out.append(BLOCKS[fill] * 2, style="red" if late_cell else "cyan")
            out.append(" ")
        out.append("\n")
    out.append("       ")
    for hour in range(24):
        out.append(f"{hour:02d} ", style="dim")
    return out


def summary(report: LagReport) -> Group:
    where = Text(f"{report.source}/{report.event_type} on {report.day}", style="bold")
    if not report.count:
        return Group(where, Text("No accepted events in this partition.", style="yellow"))
    stats = Table.grid(padding=(0, 3))
    for _ in range(5):
        stats.add_column(justify="right")
    stats.add_row(*(Text(h, style="bold cyan") for h in ("events", "p50", "p90", "p99", "max")))
    stats.add_row(
        num(report.count),
        *(Text(human_ms(v) if v is not None else "-") for v in (report.p50_ms, report.p90_ms, report.p99_ms)),
        Text(human_ms(report.max_ms) if report.max_ms is not None else "-", style="bold"),
    )
    share = 100 * report.late / report.count
    late = Text(f"late (lag ≥ {human_ms(report.late_threshold_ms)}): ")
    late.append(
        f"{report.late:,} of {report.count:,} ({share:.1f}%)", style="bold red" if report.late else "green"
    )
    extra = []
    if report.duplicates:
        extra.append(Text(f"{report.duplicates:,} duplicate receipts not counted", style="yellow"))
    if report.clock_skew:
        extra.append(
            Text(
                f"clock skew: {report.clock_skew:,} events claim a time after their arrival", style="magenta"
            )
        )
    return Group(where, stats, late, *extra)


class LagPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "plus,equals_sign", "threshold(2.0)", "Late ×2", tooltip="Double the late threshold", id="lag.up"
        ),
        Binding("minus", "threshold(0.5)", "Late ÷2", tooltip="Halve the late threshold", id="lag.down"),
    ]

    class PartitionsRead(Message):
        def __init__(self, day: str, rows: list[tuple[str, str, int, int, int]] | None, error: str | None):
            super().__init__()
            self.day = day
            self.rows = rows
            self.error = error

    class LagRead(Message):
        def __init__(self, report: LagReport | None, error: str | None) -> None:
            super().__init__()
            self.report = report
            self.error = error

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._applied: Context | None = None
        self.report: LagReport | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-bar", id="lag-form"):
            yield Input(placeholder="source", id="lag-source")
            yield Input(placeholder="type", id="lag-type", tooltip="Event type")
            yield Input(placeholder="day", id="lag-day", tooltip="Event day, UTC")
            yield Input(
                value="1h", placeholder="late after", id="lag-late", tooltip="Late threshold: 90s, 15m, 1h"
            )
        with Horizontal(id="lag-body"):
            with Vertical(id="lag-left"):
                yield Static(title("Partitions of the day"), markup=False)
                yield DataTable(id="lag-partitions", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="lag-right"):
                yield Static("", id="lag-summary", markup=False)
                yield Static(title("Events by event hour (UTC)"), markup=False)
                yield Static("", id="lag-histogram", markup=False)
                yield Static(title("Largest lag first"), markup=False)
                yield DataTable(id="lag-largest", cursor_type="row")

    def on_mount(self) -> None:
        cast(Any, self.app).pane_mounted()  # mounted after the first frame: take the size's layout
        # Fixed widths: an auto-sized column keeps the widest value it ever held, so the table's look
        # would depend on which read finished first (and the screenshots and snapshots would flicker).
        partitions = self.query_one("#lag-partitions", DataTable)
        for label, width in (("SOURCE/TYPE", 20), ("EVENTS", 6), ("LATE", 5), ("DUP", 4)):
            partitions.add_column(label, width=width)
        self.query_one("#lag-largest", DataTable).add_columns(
            "LAG", "EVENT TIME", "INGESTED", "ENTITY", "EVENT ID"
        )

    def focus_main(self) -> None:
        focus_now(self.query_one("#lag-partitions", DataTable))

    def focus_filter(self) -> None:
        self.query_one("#lag-source", Input).focus()

    def apply_context(self, ctx: Context) -> None:
        if ctx == self._applied:
            return
        self._applied = ctx
        for widget_id, value in (
            ("lag-source", ctx.source),
            ("lag-type", ctx.event_type),
            ("lag-day", ctx.day),
        ):
            if value:
                self.query_one(f"#{widget_id}", Input).value = value
        self.reload()

    def _form(self) -> tuple[str, str, str, int] | None:
        source = self.query_one("#lag-source", Input).value.strip()
        event_type = self.query_one("#lag-type", Input).value.strip()
        day = self.query_one("#lag-day", Input).value.strip()
        try:
            if day:
                parse_day(day)
            late_ms = parse_duration(self.query_one("#lag-late", Input).value or "1h", what="late threshold")
        except (TimeFormatError, InvalidRequest) as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return None
        return source, event_type, day, late_ms

    def reload(self) -> None:
        form = self._form()
        if form is None:
            return
        source, event_type, day, late_ms = form
        if day:
            entity = cast(Any, self.app).context.entity
            self._read_partitions(
                day, late_ms, entity, (source, event_type) if source and event_type else None
            )
        if source and event_type and day:
            app = cast(Any, self.app)
            ctx = app.context
            if (ctx.source, ctx.event_type, ctx.day) != (source, event_type, day):
                self._applied = app.share(source=source, event_type=event_type, day=day)
            self._read_lag(source, event_type, day, late_ms)
        else:
            self.query_one("#lag-summary", Static).update(
                Text("Choose a source, a type and a day (or pick a partition on the left).", style="yellow")
            )

    @on(Input.Submitted, "#lag-form Input")
    def _submitted(self) -> None:
        self.reload()

    def action_threshold(self, factor: float) -> None:
        form = self._form()
        if form is None:
            return
        late_ms = max(int(form[3] * factor), 1000)
        self.query_one("#lag-late", Input).value = _duration_text(late_ms)
        self.reload()

    # -- workers -------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="lag-partitions", exit_on_error=False)
    def _read_partitions(
        self, day: str, late_ms: int, entity: str | None, chosen: tuple[str, str] | None
    ) -> None:
        """The partitions of the day worth listing: those the entity in focus has events in that day (one
        scan of its day), the chosen one, and those of the workspace totals if they were read already.
        Never a scan of the whole index just to list them."""
        kit = cast(Any, self.app).kit
        try:
            scans = kit.investigate
            found: set[tuple[str, str]] = {chosen} if chosen else set()
            if entity:
                after = None
                while True:
                    page = scans.scan_entity(
                        entity, day_start(day), day_start(next_day(day)), limit=5000, after=after
                    )
                    found.update((r.source, r.event_type) for r in page.items)
                    after = page.next_cursor
                    if after is None:
                        break
            stats = cast(Any, self.app).stats
            if stats is not None:
                found.update((p.source, p.event_type) for p in stats.partitions)
            rows = []
            for source, event_type in sorted(found):
                for c in scans.day_counts_partition(source, event_type, day, next_day(day), grace_ms=late_ms):
                    rows.append((source, event_type, c.accepted, c.late, c.duplicate))
            self.post_message(self.PartitionsRead(day, rows, None))
        except Exception as exc:
            self.post_message(self.PartitionsRead(day, None, str(exc)))

    @work(thread=True, exclusive=True, group="lag-report", exit_on_error=False)
    def _read_lag(self, source: str, event_type: str, day: str, late_ms: int) -> None:
        kit = cast(Any, self.app).kit
        try:
            report = kit.lag().lag(source, event_type, day, late_ms=late_ms, top=20)
            self.post_message(self.LagRead(report, None))
        except Exception as exc:
            self.post_message(self.LagRead(None, str(exc)))

    @on(PartitionsRead)
    def _partitions(self, message: PartitionsRead) -> None:
        table = self.query_one("#lag-partitions", DataTable)
        table.clear()
        if message.rows is None:
            self.notify(f"Reading the partitions failed: {message.error}", severity="error", markup=False)
            return
        chosen = (
            self.query_one("#lag-source", Input).value.strip(),
            self.query_one("#lag-type", Input).value.strip(),
        )
        for n, (source, event_type, accepted, late, dup) in enumerate(message.rows):
            table.add_row(
                t(f"{source}/{event_type}"),
                num(accepted),
                num(late, "bold red" if late else ""),
                num(dup, "yellow" if dup else ""),
                key=f"{source}\x00{event_type}",
            )
            if (source, event_type) == chosen:
                table.move_cursor(row=n)

    @on(LagRead)
    def _lag(self, message: LagRead) -> None:
        if message.report is None:
            self.notify(f"Reading the lag failed: {message.error}", severity="error", markup=False)
            return
        r = self.report = message.report
        self.query_one("#lag-summary", Static).update(summary(r))
        self.query_one("#lag-histogram", Static).update(histogram(r))
        table = self.query_one("#lag-largest", DataTable)
        table.clear()
        for e in r.largest:
            lag = Text(
                human_ms(e.ingest_lag_ms), style="bold red" if e.ingest_lag_ms >= r.late_threshold_ms else ""
            )
            cells = (lag, t(e.event_time), t(e.ingest_time), t(e.entity_id, limit=30), t(e.event_id[:12]))
            table.add_row(*cells, key=e.event_id)

    @on(DataTable.RowSelected, "#lag-partitions")
    def _pick_partition(self, event: DataTable.RowSelected) -> None:
        source, event_type = str(event.row_key.value).split("\x00")
        self.query_one("#lag-source", Input).value = source
        self.query_one("#lag-type", Input).value = event_type
        self.reload()

    @on(DataTable.RowSelected, "#lag-largest")
    def _open_event(self, event: DataTable.RowSelected) -> None:
        if self.report is None:
            return
        for e in self.report.largest:
            if e.event_id == event.row_key.value:
                cast(Any, self.app).open_event(e.entity_id, e.event_time, e.event_id)
                return


def _duration_text(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms // 1000}s"
