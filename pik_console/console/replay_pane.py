"""The Replay pane: the scope form, a dry run that refreshes as the form changes (debounced, in a
worker) with the blast radius, Execute behind a confirmation that shows the impact (and above the size
guard asks for the scope to be typed), progress and result, the processor, and the audit history."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Button, Checkbox, DataTable, Input, ProgressBar, Select, Static

from backend.errors import Cancelled as PlanCancelled
from backend.errors import InvalidRequest
from backend.kit import current_user as actor
from backend.model import ReplayAudit, ReplayPlan, ReplayRequest
from backend.services.replay import ReplayRefused
from pik_console.console.context import Context
from pik_console.console.render import t, title, work_line
from pik_console.console.replay_events import Draining, Executed, Planning, PlanRead, Processed, Sending
from pik_console.console.replay_form import context_values, fill, read_request
from pik_console.console.replay_views import ReplayHistory, plan_view, result_view
from pik_console.console.widgets import FormSelect, focus_now

DEBOUNCE_S = 0.35
SHARED_FIELDS = ("entity", "day", "start", "end", "source", "event_type")
# At most this often a worker posts its progress (a send reports every batch of 10 messages).
PROGRESS_EVERY_S = 0.1


class Cancelled(Exception):
    """The user asked the running send to stop (c, or q): raised between two batches, so the replay service
    records what was sent and marks the replay INTERRUPTED."""


class ReplayPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "x", "execute", "Execute…", tooltip="Send this replay after a confirmation", id="replay.execute"
        ),
        Binding(
            "p",
            "process",
            "Process",
            tooltip="Drain the replay queue through the processor",
            id="replay.process",
        ),
        Binding(
            "c", "cancel", "Cancel", tooltip="Stop the send or the processor cleanly", id="replay.cancel"
        ),
    ]

    PlanRead = PlanRead
    Planning = Planning
    Sending = Sending
    Draining = Draining
    Executed = Executed
    Processed = Processed

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._applied: Context | None = None
        self._timer: Timer | None = None
        self._serial = 0
        self.plan: ReplayPlan | None = None
        self.request: ReplayRequest | None = None
        self.busy = False
        self.last_result: ReplayAudit | None = None
        self._cancel = threading.Event()
        self._work: str | None = None
        self._started = 0.0
        # The dry run in a worker: stopped by c (or q), or by a newer one (the form changed).
        self._planning = False
        self._plan_stop = threading.Event()
        self._plan_started = 0.0

    @property
    def kit(self) -> Any:
        return cast(Any, self.app).kit

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-bar", id="replay-form"):
            yield Input(placeholder="entity", id="rp-entity", tooltip="Entity scope: its window [from, to)")
            yield Input(placeholder="from", id="rp-start", tooltip="Window start (date or ISO time)")
            yield Input(placeholder="to", id="rp-end", tooltip="Window end, exclusive")
            yield Input(placeholder="source", id="rp-source", tooltip="Source (a filter with an entity)")
            yield Input(placeholder="type", id="rp-type", tooltip="Event type (a filter with an entity)")
        with Horizontal(classes="filter-bar", id="replay-form-2"):
            yield Input(placeholder="first day", id="rp-first", tooltip="Source/type scope: first event day")
            yield Input(placeholder="end day", id="rp-endday", tooltip="Source/type scope: end day (excl.)")
            yield FormSelect(
                [("any status", ""), ("ACCEPTED", "ACCEPTED"), ("DUPLICATE", "DUPLICATE")],
                id="rp-status",
                allow_blank=False,
                value="",
            )
            yield Input(value="500", placeholder="limit", id="rp-limit", tooltip="At most this many messages")
            yield Checkbox("include duplicates", id="rp-dups", tooltip="One message per receipt")
        with Horizontal(id="replay-body"):
            with VerticalScroll(id="replay-left"):
                yield Static(title("Dry run"), markup=False)
                yield Static("", id="replay-plan", markup=False)
            with Vertical(id="replay-right"):
                with Horizontal(id="replay-buttons"):
                    yield Button("Execute… (x)", id="replay-execute", variant="error", disabled=True)
                    yield Button("Run processor (p)", id="replay-process", variant="primary")
                yield ProgressBar(id="replay-progress", show_eta=False)
                yield Static("", id="replay-result", markup=False)
                yield Static(title("Audit history"), markup=False)
                yield ReplayHistory(id="replay-history", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        cast(Any, self.app).pane_mounted()  # mounted after the first frame: take the size's layout
        self.query_one("#replay-progress", ProgressBar).display = False
        if self.kit.read_only:
            self.query_one("#replay-process", Button).disabled = True
            self.query_one("#replay-result", Static).update(
                Text("READ-ONLY: previews only; Execute and the processor are disabled.", style="bold yellow")
            )

    def focus_main(self) -> None:
        focus_now(self.query_one("#replay-history", DataTable))

    def focus_filter(self) -> None:
        self.query_one("#rp-entity", Input).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A key that cannot act here is hidden (read-only) or shown dimmed; pressed anyway, it reaches the
        # app, which says why (``refusal``).
        if action in ("execute", "process") and self.kit.read_only:
            return False
        if action == "execute" and (self.plan is None or not self.plan.would_send or self.busy):
            return None
        if action == "process" and self.busy:
            return None
        if action == "cancel":
            return self.busy or self._planning
        return True

    def refusal(self, key: str) -> str | None:
        """Why ``key`` does nothing now, in one sentence."""
        if key in ("x", "p") and self.kit.read_only:
            what = "replays cannot be executed" if key == "x" else "the processor writes versions"
            return f"Read-only console: {what}; start it without --read-only to act"
        if key in ("x", "p") and self.busy:
            return f"Busy {self._work}: wait for it, or press c to cancel it"
        if key == "x":
            if self.plan is None:
                return "Nothing to execute: the dry run has no plan yet (fix the form or wait for it)"
            return "Nothing to execute: the dry run sends no message"
        if key == "c":
            return "Nothing is running to cancel"
        return None

    def running_work(self) -> str | None:
        if self.busy:
            return self._work
        return "the dry run" if self._planning else None

    def cancel_work(self) -> None:
        """Ask the running send or processor to stop at its next batch; what was done stays done and
        recorded (the audit says INTERRUPTED; the processor's held messages are finished or released).
        A dry run being planned stops at its next page (it sends nothing and is not audited)."""
        if self._planning and not self.busy:
            self._plan_stop.set()
            return
        if not self.busy or self._cancel.is_set():
            return
        self._cancel.set()
        self.query_one("#replay-result", Static).update(
            Text(f"cancelling {self._work} at the next batch…", style="bold yellow")
        )

    def action_cancel(self) -> None:
        if self._planning and not self.busy:
            self.cancel_work()
            self.query_one("#replay-plan", Static).update(t("cancelling the dry run…", "bold yellow"))
            return
        if not self.busy:
            self.notify("Nothing is running to cancel", severity="warning")
            return
        self.cancel_work()

    # -- the form ---------------------------------------------------------------------------------------

    def apply_context(self, ctx: Context) -> None:
        if ctx == self._applied:
            return
        self._applied = ctx
        with self.prevent(Input.Changed):
            for widget_id, value in context_values(ctx).items():
                self.query_one(f"#{widget_id}", Input).value = value
        self.reload()

    def reload(self) -> None:
        self._preview_now()
        self.query_one(ReplayHistory).read()

    def read_request(self) -> ReplayRequest:
        return read_request(self)

    @on(Input.Changed, "#replay-form Input, #replay-form-2 Input")
    @on(Checkbox.Changed)
    @on(Select.Changed, "#rp-status")
    def _changed(self) -> None:
        # Debounced: typing an entity id must not plan a replay per keystroke.
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._preview_now)

    def _preview_now(self) -> None:
        self._serial += 1
        try:
            request = self.read_request()
        except (InvalidRequest, ValueError) as exc:
            self._show_plan_problem(str(exc))
            return
        self.request = request
        self._share(request)
        self.query_one("#replay-plan", Static).update(Text("planning…", style="italic dim"))
        self._plan_stop = threading.Event()  # the previous dry run, if any, stops on its own serial
        self._planning = True
        self._plan_started = time.monotonic()
        self.refresh_bindings()
        self._plan(self._serial, request, self._plan_stop)

    def _share(self, r: ReplayRequest) -> None:
        """The scope typed here becomes the console's context (the header, and the panes shown next)."""
        app = cast(Any, self.app)
        if r.entity_id and r.start_time and r.end_time:
            ctx = app.context.with_window(r.entity_id, r.start_time, r.end_time)
            if r.source and r.event_type:
                ctx = replace(ctx, source=r.source, event_type=r.event_type)
        elif r.source and r.event_type and r.start_day:
            ctx = replace(
                app.context, entity=None, source=r.source, event_type=r.event_type, day=r.start_day,
                start=None, end=None,
            )  # fmt: skip
        else:
            return
        if ctx != app.context:
            self._applied = app.share(**{f: getattr(ctx, f) for f in SHARED_FIELDS})

    def _show_plan_problem(self, problem: str, style: str = "yellow") -> None:
        self.plan = None
        self._planning = False
        self.query_one("#replay-plan", Static).update(t(problem, style))
        self._update_buttons()

    @work(thread=True, exclusive=True, group="replay-plan", exit_on_error=False)
    def _plan(self, serial: int, request: ReplayRequest, stop: threading.Event) -> None:
        last = 0.0

        def progress(read: int, total: int | None) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                self.post_message(self.Planning(serial, read, total))

        def should_stop() -> bool:
            return stop.is_set() or serial != self._serial  # c, q, or a newer dry run

        try:
            plan = self.kit.replay(preview=True).plan(
                request, actor=actor(), on_progress=progress, should_stop=should_stop
            )
            self.post_message(self.PlanRead(serial, plan, None))
        except PlanCancelled as exc:
            self.post_message(self.PlanRead(serial, None, str(exc), cancelled=True))
        except Exception as exc:
            self.post_message(self.PlanRead(serial, None, str(exc)))

    @on(Planning)
    def _planning_progress(self, message: Planning) -> None:
        if message.serial != self._serial or self._plan_stop.is_set():
            return
        self.query_one("#replay-plan", Static).update(
            work_line(
                "planning",
                message.read,
                message.total,
                time.monotonic() - self._plan_started,
                "receipts read",
            )
        )

    @on(PlanRead)
    def _plan_read(self, message: PlanRead) -> None:
        if message.serial != self._serial:
            return  # the form changed since
        self._planning = False
        self.refresh_bindings()
        if message.cancelled:
            self.notify("Dry run cancelled: nothing was sent", title="Replay", markup=False)
            self._show_plan_problem(
                f"Dry run cancelled ({message.error}): change the form to plan again", style="bold yellow"
            )
            return
        if message.plan is None:
            self._show_plan_problem(message.error or "the dry run failed")
            return
        self.plan = message.plan
        self.query_one("#replay-plan", Static).update(
            plan_view(message.plan, self.kit.settings.replay.confirm_above)
        )
        self._update_buttons()

    def _update_buttons(self) -> None:
        disabled = self.kit.read_only or self.busy or self.plan is None or not self.plan.would_send
        self.query_one("#replay-execute", Button).disabled = disabled
        self.refresh_bindings()

    # -- execution ----------------------------------------------------------------------------------

    @on(Button.Pressed, "#replay-execute")
    def _execute_button(self) -> None:
        self.action_execute()

    @on(Button.Pressed, "#replay-process")
    def _process_button(self) -> None:
        self.action_process()

    def action_execute(self) -> None:
        if self.kit.read_only:
            self.notify("Read-only: replays cannot be executed (the preview still works)", severity="warning")
            return
        plan = self.plan
        if plan is None or not plan.would_send or self.busy:
            self.notify("Nothing to execute: the dry run sends no message", severity="warning")
            return
        from pik_console.console.modals import ConfirmReplay

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._start_execute(plan)
            else:
                self.notify("Replay cancelled: nothing was sent")

        self.app.push_screen(ConfirmReplay(plan, typed=plan.needs_force), confirmed)

    def _begin(self, work: str) -> None:
        self.busy = True
        self._work = work
        self._cancel.clear()
        self._started = time.monotonic()
        self._update_buttons()

    def _end(self) -> None:
        self.busy = False
        self._work = None
        self._update_buttons()

    def _start_execute(self, plan: ReplayPlan) -> None:
        self._begin("sending the replay")
        progress = self.query_one("#replay-progress", ProgressBar)
        progress.display = True
        progress.update(total=plan.would_send, progress=0)
        self.query_one("#replay-result", Static).update(Text(f"sending {plan.would_send:,} messages…"))
        self._execute(plan)

    @work(thread=True, exclusive=True, group="replay-execute", exit_on_error=False)
    def _execute(self, plan: ReplayPlan) -> None:
        last = 0.0

        def progress(sent: int, failed: int, total: int) -> None:
            nonlocal last
            if self._cancel.is_set():
                raise Cancelled(f"cancelled after {sent:,} of {total:,} messages")
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or sent + failed >= total:
                last = now
                self.post_message(self.Sending(sent, failed, total))

        try:
            audit = self.kit.replay().execute(
                plan.request,
                actor=actor(),
                force=plan.needs_force,
                expected_fingerprint=plan.fingerprint,
                on_progress=progress,
            )
            self.post_message(self.Executed(audit, None))
        except ReplayRefused as exc:
            self.post_message(self.Executed(exc.audit, str(exc)))
        except Cancelled as exc:
            self.post_message(
                self.Executed(
                    None,
                    f"Replay interrupted: {exc}. The audit trail records it as INTERRUPTED with the count "
                    "sent; the rest were not sent.",
                    cancelled=True,
                )
            )
        except Exception as exc:
            self.post_message(self.Executed(None, str(exc)))

    @on(Sending)
    def _sending(self, message: Sending) -> None:
        done = message.sent + message.failed
        self.query_one("#replay-progress", ProgressBar).update(total=message.total, progress=done)
        if not self._cancel.is_set():
            extra = f"{message.failed:,} failed" if message.failed else ""
            self.query_one("#replay-result", Static).update(
                work_line("sending", done, message.total, time.monotonic() - self._started, "messages", extra)
            )

    @on(Executed)
    def _executed(self, message: Executed) -> None:
        self._end()
        self.query_one("#replay-progress", ProgressBar).display = False
        result = self.query_one("#replay-result", Static)
        if message.cancelled:
            self.notify(
                message.error or "Replay interrupted", title="Replay", severity="warning", markup=False
            )
            result.update(t(message.error, "bold yellow"))
        elif message.error is not None:
            self.notify(f"Replay not sent: {message.error}", severity="error", markup=False)
            result.update(t(message.error, "red"))
        if message.audit is not None:
            self.last_result = message.audit
            if message.error is None:
                result.update(result_view(message.audit))
                self.notify(
                    f"Replay {message.audit.replay_id}: {message.audit.sent:,} sent",
                    title="Replay",
                    markup=False,
                )
        self.query_one(ReplayHistory).read()

    def action_process(self) -> None:
        if self.kit.read_only:
            self.notify(
                "Read-only: the processor writes aggregate versions and is disabled", severity="warning"
            )
            return
        if self.busy:
            self.notify(self.refusal("p") or "Busy", severity="warning", markup=False)
            return
        self._begin("running the processor")
        self.query_one("#replay-result", Static).update(Text("processing the replay queue…", style="italic"))
        self._process()

    @work(thread=True, exclusive=True, group="replay-process", exit_on_error=False)
    def _process(self) -> None:
        try:
            drain = self.kit.drain()
            try:
                total: int | None = drain.queue.depth().visible
            except Exception:
                total = None  # the depth is only for the ETA
            last = 0.0

            def progress(at: Any) -> None:  # a DrainProgress
                nonlocal last
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    last = now
                    self.post_message(self.Draining(at.received, at.processed, at.versions_written, total))

            report = drain.run(on_progress=progress, should_stop=self._cancel.is_set)
            self.post_message(self.Processed(report, None))
        except Exception as exc:
            self.post_message(self.Processed(None, str(exc)))

    @on(Draining)
    def _draining(self, message: Draining) -> None:
        if self._cancel.is_set():
            return
        bar_ = self.query_one("#replay-progress", ProgressBar)
        bar_.display = True
        total = max(message.total or 0, message.processed) or None
        bar_.update(total=total, progress=message.processed)
        self.query_one("#replay-result", Static).update(
            work_line(
                "processing",
                message.processed,
                total,
                time.monotonic() - self._started,
                "messages",
                f"{message.received:,} received · {message.versions:,} new versions",
            )
        )

    @on(Processed)
    def _processed(self, message: Processed) -> None:
        self._end()
        self.query_one("#replay-progress", ProgressBar).display = False
        result = self.query_one("#replay-result", Static)
        if message.report is None:
            self.notify(f"The processor failed: {message.error}", severity="error", markup=False)
            result.update(t(message.error, "red"))
            return
        r = message.report
        text = Text()
        if r.interrupted:
            text.append(
                "Processor stopped on request; the messages not processed are queued again (p resumes).\n",
                style="bold yellow",
            )
        text.append(f"Processor: {r.received:,} messages, {r.windows:,} windows, ", style="bold")
        text.append(f"{r.versions_written:,} new versions", style="bold green")
        text.append(f", {r.unchanged:,} unchanged")
        if r.failed_messages:
            text.append(f", {r.failed_messages:,} failing ({r.dead_lettered:,} dead-lettered)", style="red")
        text.append("\nCompare the versions in the Aggregates pane (5).")
        result.update(text)
        self.notify(f"{r.versions_written:,} new aggregate versions", title="Processor", markup=False)
        cast(Any, self.app).versions_changed()

    # -- the audit trail ------------------------------------------------------------------------------

    @on(ReplayHistory.Chosen)
    def _audit_row(self, message: ReplayHistory.Chosen) -> None:
        """Enter on a replay of the trail: its scope back in the form, with a fresh dry run of it now."""
        record = message.record
        self.show_request(record.request)
        self.notify(
            f"The form holds the scope of {record.replay_id} ({record.outcome.value}, {record.sent:,} sent); "
            "the dry run below is of today's data",
            title="Replay",
            markup=False,
        )

    def show_request(self, r: ReplayRequest) -> None:
        fill(self, r)
        self._preview_now()
