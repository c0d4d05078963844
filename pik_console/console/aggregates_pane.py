"""The Aggregates pane: the versions of (entity, day, metric), two versions side by side with the changed
fields highlighted, ``[`` and ``]`` to step through them, the explanation of the difference (late
arrivals, replays, duplicates, removed inputs), and from an added event a jump to it in Events."""

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
from textual.widgets import DataTable, Input, Select, Static

from backend.model import AggregateVersion
from backend.services.versions import VersionDiff, value_text
from backend.times import TimeFormatError, human_ms, parse_day
from pik_console.console.context import Context
from pik_console.console.render import t, title
from pik_console.console.widgets import FormSelect, focus_now


def _cause(v: AggregateVersion) -> str:
    return ", ".join(v.replay_ids) if v.replay_ids else "direct recompute"


COMPARED = (
    ("value", lambda v: value_text(v.value)),
    ("inputs", lambda v: f"{v.input_count:,}"),
    ("values used", lambda v: f"{v.values_used:,}"),
    ("inputs hash", lambda v: v.inputs_hash[:16]),
    ("computed at", lambda v: v.computed_at),
    ("caused by", _cause),
    ("definition", lambda v: v.definition_hash[:16]),
    ("window events", lambda v: "-" if v.window_events is None else f"{v.window_events:,}"),
)


def side_by_side(older: AggregateVersion, newer: AggregateVersion) -> Table:
    """Two versions in columns; a field that changed is highlighted in the newer one."""
    table = Table(box=None, padding=(0, 2), header_style="bold", show_edge=False)
    table.add_column("", style="bold cyan", no_wrap=True)
    table.add_column(f"version {older.version}", overflow="fold")
    table.add_column(f"version {newer.version}", overflow="fold")
    for name, get in COMPARED:
        a, b = get(older), get(newer)
        changed = a != b
        table.add_row(Text(name), t(a), t(b, "bold black on yellow" if changed else ""))
    return table


def diff_view(d: VersionDiff) -> Group:
    head = Text()
    head.append(t(f"{d.metric} of {d.entity_id} on {d.day}", "bold"))
    if d.delta is not None and d.delta != 0:
        sign = "+" if d.delta > 0 else "-"
        head.append(f"   {sign}{value_text(abs(d.delta))}", style="bold green" if d.delta > 0 else "bold red")
    if d.manifests:
        counts = Text(
            f"added {d.added:,} ({d.added_after_older:,} late arrivals) · removed {d.removed:,} · "
            f"changed payloads {d.changed:,} · duplicate receipts excluded {d.duplicates_excluded:,}",
            style="dim",
        )
    else:  # the original kit stored no input manifests: which events changed is unknown
        hashes = "changed" if d.inputs_hash_changed else "unchanged"
        counts = Text(
            f"no input manifests (versions the original kit wrote): inputs {d.older.input_count:,} → "
            f"{d.newer.input_count:,}, inputs hash {hashes}",
            style="dim",
        )
    why = [t(line) for line in d.explanation]
    return Group(head, side_by_side(d.older, d.newer), counts, Text(""), title("Why"), *why)


def single_view(v: AggregateVersion) -> Group:
    table = Table(box=None, padding=(0, 2), show_edge=False)
    table.add_column("", style="bold cyan")
    table.add_column(f"version {v.version}")
    for name, get in COMPARED:
        table.add_row(Text(name), t(get(v)))
    return Group(
        t(f"{v.metric} of {v.entity_id} on {v.day}", "bold"),
        table,
        Text("A single version: nothing to compare yet.", style="dim"),
    )


# How often the pane, while shown, looks for versions written elsewhere (one query of the window's versions).
POLL_S = 5.0


class AggregatesPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "left_square_bracket",
            "step(-1)",
            "Older",
            tooltip="Compare one version back",
            id="versions.older",
        ),
        Binding(
            "right_square_bracket",
            "step(1)",
            "Newer",
            tooltip="Compare one version forward",
            id="versions.newer",
        ),
        Binding(
            "o", "open_event", "Open event", tooltip="Open the added event in Events", id="versions.open"
        ),
    ]

    class VersionsRead(Message):
        def __init__(self, key: tuple[str, str], versions: list[AggregateVersion] | None, error: str | None):
            super().__init__()
            self.key = key
            self.versions = versions
            self.error = error

    class DiffRead(Message):
        def __init__(self, diff: VersionDiff | None, error: str | None) -> None:
            super().__init__()
            self.diff = diff
            self.error = error

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._applied: Context | None = None
        self.versions: list[AggregateVersion] = []
        self.metric: str | None = None
        self.to_version: int | None = None
        self.diff: VersionDiff | None = None
        # Whose versions are listed, and whether the pane follows the newest pair as versions are written
        # (until [ steps back; ] back to the newest follows again).
        self._key: tuple[str, str] | None = None
        self._following = True

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-bar", id="agg-form"):
            yield Input(placeholder="entity", id="agg-entity")
            yield Input(placeholder="day", id="agg-day", tooltip="YYYY-MM-DD (UTC)")
            yield FormSelect([], id="agg-metric", prompt="metric", allow_blank=True)
        with Horizontal(id="agg-body"):
            with Vertical(id="agg-left"):
                yield Static(title("Versions"), markup=False)
                yield DataTable(id="agg-versions", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="agg-right"):
                yield Static("", id="agg-diff", markup=False)
                yield Static(
                    title("Added events (enter: open in Events)"), markup=False, id="agg-added-title"
                )
                yield DataTable(id="agg-added", cursor_type="row")

    def on_mount(self) -> None:
        cast(Any, self.app).pane_mounted()  # mounted after the first frame: take the size's layout
        # Fixed widths: an auto-sized column keeps the widest value it ever held, so the look would depend
        # on which read finished first.
        versions = self.query_one("#agg-versions", DataTable)
        for label, width in (("METRIC", 20), ("V", 3), ("VALUE", 10), ("INPUTS", 7), ("COMPUTED", 11)):
            versions.add_column(label, width=width)
        versions.add_column("CAUSE", width=7)
        self.query_one("#agg-added", DataTable).add_columns("EVENT ID", "INGESTED", "LAG", "LATE")
        # Versions written by another processor (pik process, the Lambda) show up while the pane is shown.
        self.set_interval(POLL_S, self._poll)

    def focus_main(self) -> None:
        focus_now(self.query_one("#agg-versions", DataTable))

    def focus_filter(self) -> None:
        self.query_one("#agg-entity", Input).focus()

    def apply_context(self, ctx: Context) -> None:
        if ctx == self._applied:
            return
        self._applied = ctx
        if ctx.metric:
            self.metric = ctx.metric
        if ctx.entity:
            self.query_one("#agg-entity", Input).value = ctx.entity
        if ctx.day:
            self.query_one("#agg-day", Input).value = ctx.day
        self.reload()

    def invalidate(self) -> None:
        self._applied = None

    def reload(self) -> None:
        entity = self.query_one("#agg-entity", Input).value.strip()
        day = self.query_one("#agg-day", Input).value.strip()
        if not (entity and day):
            self.query_one("#agg-diff", Static).update(Text("Choose an entity and a day.", style="yellow"))
            return
        try:
            parse_day(day)
        except TimeFormatError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self._read_versions(entity, day)

    @on(Input.Submitted, "#agg-form Input")
    def _submitted(self) -> None:
        entity = self.query_one("#agg-entity", Input).value.strip()
        day = self.query_one("#agg-day", Input).value.strip()
        self.reload()
        if entity and day:
            try:
                parse_day(day)
            except TimeFormatError:
                return
            app = cast(Any, self.app)
            if (app.context.entity, app.context.day) != (entity, day):
                self._applied = app.share(entity=entity, day=day, start=None, end=None, compare=None)
        self.focus_main()

    def _poll(self) -> None:
        if self._key is not None and cast(Any, self.app).active_pane == "aggregates":
            self._poll_versions(*self._key, [(v.metric, v.version) for v in self.versions])

    @work(thread=True, exclusive=True, group="agg-poll", exit_on_error=False)
    def _poll_versions(self, entity: str, day: str, known: list[tuple[str, int]]) -> None:
        try:
            versions = cast(Any, self.app).kit.versions().versions(entity, day)
        except Exception:
            return  # the next poll tries again; a read the user asked for reports its error
        if [(v.metric, v.version) for v in versions] != known:
            self.post_message(self.VersionsRead((entity, day), versions, None))

    @work(thread=True, exclusive=True, group="agg-versions", exit_on_error=False)
    def _read_versions(self, entity: str, day: str) -> None:
        try:
            versions = cast(Any, self.app).kit.versions().versions(entity, day)
            self.post_message(self.VersionsRead((entity, day), versions, None))
        except Exception as exc:
            self.post_message(self.VersionsRead((entity, day), None, str(exc)))

    @on(VersionsRead)
    def _versions_read(self, message: VersionsRead) -> None:
        table = self.query_one("#agg-versions", DataTable)
        table.clear()
        if message.versions is None:
            self.query_one("#agg-diff", Static).update(t(message.error, "yellow"))
            return
        self.versions = message.versions
        entity, day = message.key
        if message.key != self._key:
            self._key = message.key
            self._following = True
        if not self.versions:
            self.refresh_bindings()
            self.diff = None
            self.query_one("#agg-diff", Static).update(
                t(f"No aggregate versions for {entity} on {day}: run a replay and the processor.", "yellow")
            )
            self.query_one("#agg-added", DataTable).clear()
            return
        for v in self.versions:
            table.add_row(
                t(v.metric),
                Text(str(v.version), justify="right"),
                Text(value_text(v.value), justify="right"),
                Text(f"{v.input_count:,}", justify="right"),
                t(v.computed_at[5:16].replace("T", " ")),
                Text("replay" if v.replay_ids else "direct", style="cyan" if v.replay_ids else "dim"),
                key=f"{v.metric}\x00{v.version}",
            )
        metrics = sorted({v.metric for v in self.versions})
        select = self.query_one("#agg-metric", Select)
        with self.prevent(Select.Changed):
            select.set_options([(m, m) for m in metrics])
            if self.metric not in metrics:
                # Open the metric whose versions tell the most: the one with the most versions.
                self.metric = max(metrics, key=lambda m: (self._latest(m), m == "daily_event_count"))
                self.to_version = None
            select.value = self.metric
        assert self.metric is not None
        latest = self._latest(self.metric)
        if self.to_version is None or self.to_version > latest or self._following:
            self.to_version = latest
        self._show()

    def _latest(self, metric: str) -> int:
        return max((v.version for v in self.versions if v.metric == metric), default=0)

    @on(Select.Changed, "#agg-metric")
    def _metric(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.metric = event.value
            self.to_version = self._latest(event.value)
            self._following = True
            self._show()

    @on(DataTable.RowSelected, "#agg-versions")
    def _pick(self, event: DataTable.RowSelected) -> None:
        metric, version = str(event.row_key.value).split("\x00")
        self.metric = metric
        self.to_version = int(version)
        self._following = self.to_version == self._latest(metric)
        with self.prevent(Select.Changed):
            self.query_one("#agg-metric", Select).value = metric
        self._show()

    def refusal(self, key: str) -> str | None:
        if self.metric is None or self.to_version is None:
            return "No versions listed: choose an entity and a day (/) first"
        if key == "left_square_bracket":
            return f"Already at the oldest versions of {self.metric}"
        if key == "right_square_bracket":
            return f"Already at the newest versions of {self.metric} (v{self.to_version})"
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "step" and self.metric is not None and self.to_version is not None:
            step = cast(int, parameters[0]) if parameters else 0
            target = self.to_version + step
            if target < 1 or target > self._latest(self.metric):
                return None  # dimmed; the key is refused with the reason
        return True

    def action_step(self, step: int) -> None:
        if self.metric is None or self.to_version is None:
            self.notify(self.refusal("") or "", severity="warning", markup=False)
            return
        latest = self._latest(self.metric)
        target = max(min(self.to_version + step, latest), 1)
        self._following = target == latest
        if target != self.to_version:
            self.to_version = target
            self._show()

    def _show(self) -> None:
        self.refresh_bindings()  # [ and ] are offered by what can be stepped to now (check_action)
        if self.metric is None or self.to_version is None:
            return
        pair = (self.to_version - 1, self.to_version) if self.to_version > 1 else None
        app = cast(Any, self.app)
        if (app.context.metric, app.context.compare) != (self.metric, pair):
            self._applied = app.share(metric=self.metric, compare=pair)
        table = self.query_one("#agg-versions", DataTable)
        key = f"{self.metric}\x00{self.to_version}"
        for n, row in enumerate(table.ordered_rows):
            if row.key.value == key:
                table.move_cursor(row=n)
                break
        entity = self.query_one("#agg-entity", Input).value.strip()
        day = self.query_one("#agg-day", Input).value.strip()
        if self.to_version <= 1:
            one = next((v for v in self.versions if v.metric == self.metric and v.version == 1), None)
            self.diff = None
            if one is not None:
                self.query_one("#agg-diff", Static).update(single_view(one))
            self.query_one("#agg-added", DataTable).clear()
            return
        self.query_one("#agg-diff", Static).update(Text("comparing…", style="italic dim"))
        self._read_diff(entity, day, self.metric, self.to_version - 1, self.to_version)

    @work(thread=True, exclusive=True, group="agg-diff", exit_on_error=False)
    def _read_diff(self, entity: str, day: str, metric: str, older: int, newer: int) -> None:
        try:
            diff = cast(Any, self.app).kit.versions().diff(entity, day, metric, older, newer)
            self.post_message(self.DiffRead(diff, None))
        except Exception as exc:
            self.post_message(self.DiffRead(None, str(exc)))

    @on(DiffRead)
    def _diff_read(self, message: DiffRead) -> None:
        if message.diff is None:
            self.query_one("#agg-diff", Static).update(t(message.error, "red"))
            return
        d = self.diff = message.diff
        self.query_one("#agg-diff", Static).update(diff_view(d))
        added = self.query_one("#agg-added", DataTable)
        added.clear()
        for c in d.added_sample:
            added.add_row(
                t(c.event_id[:16]),
                t(c.ingest_time),
                t(human_ms(c.ingest_lag_ms)),
                Text("late" if c.after_older else "", style="bold yellow"),
                key=c.event_id,
            )

    @on(DataTable.RowSelected, "#agg-added")
    def _open_added(self, event: DataTable.RowSelected) -> None:
        cast(Any, self.app).open_event_id(str(event.row_key.value))

    def action_open_event(self) -> None:
        table = self.query_one("#agg-added", DataTable)
        if self.diff is None or not table.row_count:
            self.notify("No added event to open: step to a version that added events", severity="warning")
            return
        row = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        cast(Any, self.app).open_event_id(str(row.value))
