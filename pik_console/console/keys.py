"""The console's keys in one place: its own bindings (APP_BINDINGS), which pane owns each command key (so a
key pressed elsewhere is refused with the reason), the command palette's entries and the help's sections."""

from __future__ import annotations

from textual.binding import Binding, BindingType

# The pane keys, and the key each pane's command keys are refused with elsewhere (a refusal always says why).
PANE_KEYS = {"overview": "0", "events": "1", "lag": "2", "gaps": "3", "replay": "4", "aggregates": "5"}
COMMAND_KEYS: dict[str, tuple[str, str]] = {
    "x": ("replay", "execute a replay"),
    "p": ("replay", "run the processor"),
    "c": ("replay", "cancel the running work"),
    "left_square_bracket": ("aggregates", "step to older versions"),
    "right_square_bracket": ("aggregates", "step to newer versions"),
    "o": ("aggregates", "open the added event"),
    "plus": ("lag", "raise the late threshold"),
    "minus": ("lag", "lower the late threshold"),
    "colon": ("events", "jump to a time"),
    "y": ("events", "copy the event"),
}
KEY_NAMES = {"left_square_bracket": "[", "right_square_bracket": "]", "plus": "+", "minus": "-", "colon": ":"}


def palette_entries(read_only: bool) -> list[tuple[str, str, str]]:
    """(title, help, action) for every console action. Mutating ones are left out in read-only mode."""
    entries = [
        ("Overview: show pane", "What is wrong here, ranked; enter opens a finding", "pane('overview')"),
        ("Events: show pane", "Browse events a page at a time", "pane('events')"),
        ("Events: filter", "Entity and window, or source/type/day; status incl. DUPLICATE and REJECTED",
         "pane('events');filter"),
        ("Events: jump to a time", "Anchor the entity window at a time", "pane('events');events_jump"),
        ("Events: first event", "Go to the start of the listing", "pane('events');events_first"),
        ("Events: last event", "Go to the end (one descending query)", "pane('events');events_last"),
        ("Lag: show pane", "Lag statistics, hourly histogram, largest lag first", "pane('lag')"),
        ("Lag: raise the late threshold", "Double the late threshold", "pane('lag');lag_threshold(2.0)"),
        ("Lag: lower the late threshold", "Halve the late threshold", "pane('lag');lag_threshold(0.5)"),
        ("Gaps: show pane", "Events per day, missing days classified", "pane('gaps')"),
        ("Replay: show pane", "The replay builder with a live dry run", "pane('replay')"),
        ("Replay: audit history", "Every replay run or previewed", "pane('replay')"),
        ("Aggregates: show pane", "Versions of (entity, day, metric) and their diffs", "pane('aggregates')"),
        ("Aggregates: older versions", "Step one version back", "pane('aggregates');versions_step(-1)"),
        ("Aggregates: newer versions", "Step one version forward", "pane('aggregates');versions_step(1)"),
        ("Aggregates: open added event", "Jump from the diff to the event in the Events pane",
         "pane('aggregates');versions_open_event"),
        ("Report: write incident report", "A Markdown report of the entity and day", "report"),
        ("Refresh pane", "Read the current pane again", "refresh"),
        ("Help", "Every key, pane by pane", "help"),
    ]  # fmt: skip
    if not read_only:
        entries += [
            (
                "Replay: execute…",
                "Send the previewed replay, after a confirmation",
                "pane('replay');replay_execute",
            ),
            (
                "Processor: run",
                "Drain the replay queue through the processor",
                "pane('replay');replay_process",
            ),
        ]
    return entries


def help_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (
            "Everywhere",
            [
                ("0 … 5", "Overview, Events, Lag, Gaps, Replay, Aggregates"),
                ("s / d / e", "pick a source/type, a day, an entity from a list (type to filter)"),
                ("/", "edit the filter or form of the pane"),
                ("escape", "leave the field: back to the pane's list"),
                ("r", "read the pane again"),
                ("w", "write a Markdown incident report of the entity and day"),
                ("ctrl+p", "command palette: every action by name"),
                ("tab / shift+tab", "move between fields"),
                ("?", "this help"),
                ("q", "quit"),
            ],
        ),
        (
            "Events",
            [
                ("↑ ↓ pgup pgdn", "move; pages are read as you go (never the whole window)"),
                ("home / end", "first / last event (one query each)"),
                (":", "jump to a time in the entity's window"),
                ("enter", "focus the detail (raw JSON, receipts, rejection bytes)"),
                ("y / Y", "copy the event id / its raw JSON (OSC 52)"),
            ],
        ),
        (
            "Lag",
            [
                ("enter on a partition", "show its lag"),
                ("+ / -", "double / halve the late threshold"),
                ("enter on an event", "open it in Events"),
            ],
        ),
        ("Overview", [("enter on a finding", "open its window in the pane that shows it, context set")]),
        ("Gaps", [("enter on a day", "list that day in Events")]),
        (
            "Replay",
            [
                ("(typing)", "the dry run refreshes as the form changes"),
                ("x", "execute: a confirmation with the impact; above the guard, type the scope"),
                ("p", "run the processor over the replay queue"),
                ("c", "cancel the send or the processor cleanly (q does too, then quits)"),
                ("enter on an audit row", "that replay's scope back in the form"),
            ],
        ),
        (
            "Aggregates",
            [
                ("[ / ]", "step the compared versions back / forward"),
                ("enter on an added event", "jump to it in Events"),
            ],
        ),
    ]


# The console's own keys (PikConsole.BINDINGS); each pane adds its own.
APP_BINDINGS: list[BindingType] = [
    Binding("question_mark", "help", "Help", tooltip="Every key, pane by pane", id="app.help"),
    Binding("slash", "filter", "Filter", tooltip="Edit the filter or form of this pane", id="app.filter"),
    # The tabs show the pane keys ("1 Events" …): the footer keeps its room for the pane's own keys.
    Binding(
        "0",
        "pane('overview')",
        "Overview",
        show=False,
        tooltip="What is wrong here, ranked",
        id="app.pane.overview",
    ),
    Binding(
        "1", "pane('events')", "Events", show=False, tooltip="Browse events by page", id="app.pane.events"
    ),
    Binding("2", "pane('lag')", "Lag", show=False, tooltip="Lag of a source/type/day", id="app.pane.lag"),
    Binding(
        "3",
        "pane('gaps')",
        "Gaps",
        show=False,
        tooltip="Events per day; missing days",
        id="app.pane.gaps",
    ),
    Binding(
        "4",
        "pane('replay')",
        "Replay",
        show=False,
        tooltip="Preview and run a replay",
        id="app.pane.replay",
    ),
    Binding(
        "5",
        "pane('aggregates')",
        "Aggregates",
        show=False,
        tooltip="Aggregate versions and diffs",
        id="app.pane.aggregates",
    ),
    Binding(
        "e",
        "pick('entity')",
        "Entity",
        tooltip="Pick an entity of the source/type and day",
        id="app.pick.entity",
    ),
    Binding("s", "pick('partition')", "Source", tooltip="Pick a source/type", id="app.pick.partition"),
    Binding("d", "pick('day')", "Day", tooltip="Pick a day of the entity or source/type", id="app.pick.day"),
    Binding("r", "refresh", "Refresh", show=False, tooltip="Read this pane again", id="app.refresh"),
    Binding(
        "w",
        "report",
        "Report",
        tooltip="Write a Markdown incident report of the entity and day",
        id="app.report",
    ),
    Binding("q", "quit", "Quit", tooltip="Leave the console (stops running work first)", id="app.quit"),
    # Before the field sees it (priority), so that the focus has moved when the key typed next is read; a
    # screen over the console's, or an open Select, keeps its own Escape (the action skips).
    Binding(
        "escape",
        "back",
        "Back",
        show=False,
        priority=True,
        tooltip="Leave the field: back to the pane's list",
        id="app.back",
    ),
    # Tab and Shift+Tab, before the field sees them too: typed fast ("device-1", Tab, "2025-12-01..."), the
    # keys read with Tab went to the field it was leaving, since the screen's own Tab acts only once the
    # field has passed it on. Every screen's focus moves as before.
    Binding("tab", "focus_next", show=False, priority=True, tooltip="The next field", id="app.focus_next"),
    Binding(
        "shift+tab",
        "focus_previous",
        show=False,
        priority=True,
        tooltip="The previous field",
        id="app.focus_previous",
    ),
    # A pane's command key pressed where it means nothing (another pane, read-only, nothing to act on)
    # reaches these last: they say why instead of doing nothing.
    *(
        Binding(
            key,
            f"refused('{key}')",
            show=False,
            tooltip=f"{what}: says why it cannot be done here",
            id=f"app.refused.{key}",
        )
        for key, (_, what) in COMMAND_KEYS.items()
    ),
]
