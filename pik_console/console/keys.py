"""The console's keys in one place: which pane owns each command key (so a key pressed elsewhere is refused
with the reason), the command palette's entries and the help's sections."""

from __future__ import annotations

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
