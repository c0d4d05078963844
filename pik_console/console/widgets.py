"""Form widgets with the keys of a console: a choice is opened with enter or space, never by the arrow
keys, so a Down pressed after choosing a status moves on instead of opening the menu again."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from textual import events
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Input, Select


class FormSelect(Select[str], inherit_bindings=False):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter,space", "show_overlay", "Choose", show=False, tooltip="Open the choices", id="select.open"
        ),
    ]


class TypeAhead:
    """For a modal screen with one field to type in (a filter, a time, the scope that confirms a replay):
    keys typed right after the key that opened it can arrive before the screen is composed or before the
    field has the focus. Printable ones then go into the field (enter submits it; those arriving before the
    field exists wait for it), never to the console's own keys (``w`` wrote a report, ``e`` opened a second
    list, ``1`` switched panes)."""

    TYPE_INTO: ClassVar[str]  # the field's selector

    def take_key(self, event: events.Key) -> bool:
        """Type ``event`` into the field: a key that reached the app while this screen is on top (so the field
        did not take it: it was sent to the screen below before this one opened); True when taken. Keys that
        arrive before the field exists wait for it."""
        screen = cast(Any, self)
        if event.character is not None and event.character.isprintable() and event.key != "space":
            typed = event.character
        elif event.key == "enter":
            typed = "\n"
        else:
            return False
        held: list[tuple[str, str | None]] | None = screen.__dict__.get("_held")
        if held is not None:
            # Typed after an enter that is still being answered: for whatever comes next (the screen below,
            # once this one closes; this field again if it stays open).
            held.append((event.key, event.character))
            return True
        if not self.TYPE_INTO:
            return False  # nothing to type in (a confirmation below the size guard)
        try:
            field = screen.query_one(self.TYPE_INTO, Input)
        except NoMatches:
            if screen.is_mounted:
                return False
            # Not composed yet: the key waits for the field.
            pending: list[str] = screen.__dict__.setdefault("_typed_ahead", [])
            if not pending:
                screen.call_after_refresh(self._flush_typed, 50)
            pending.append(typed)
            return True
        if screen.__dict__.get("_typed_ahead"):
            screen.__dict__["_typed_ahead"].append(typed)  # behind the keys still waiting
            return True
        # A printable key that comes back to the app did not go through the field (it takes those itself):
        # it was sent to the screen below, before this one opened.
        self._type(field, typed)
        return True

    def _type(self, field: Input, typed: str) -> None:
        field.focus()
        if typed == "\n":
            self.hold_keys()  # what follows waits for the answer to this enter
            field.post_message(Input.Submitted(field, field.value))
        else:
            field.insert_text_at_cursor(typed)

    def _flush_typed(self, tries: int) -> None:
        screen = cast(Any, self)
        try:
            field = screen.query_one(self.TYPE_INTO, Input)
        except NoMatches:
            if tries > 0:
                screen.call_after_refresh(self._flush_typed, tries - 1)
            return
        pending: list[str] = screen.__dict__.pop("_typed_ahead", [])
        for typed in pending:
            self._type(field, typed)
        field.focus()

    def hold_keys(self) -> None:
        """An enter is being answered (the list is still being read): keys typed from now on wait for the
        answer (``dismiss`` hands them to the screen below; ``release_held`` to this field)."""
        cast(Any, self).__dict__.setdefault("_held", [])

    def release_held(self) -> None:
        """The enter did not close the screen (nothing matched, a wrong time or scope): the keys typed after
        it go into the field after all."""
        screen = cast(Any, self)
        held: list[tuple[str, str | None]] = screen.__dict__.pop("_held", None) or []
        try:
            field = screen.query_one(self.TYPE_INTO, Input)
        except NoMatches:
            return
        for key, character in held:
            if character is not None and key != "enter":
                field.insert_text_at_cursor(character)

    def dismiss(self, result: Any = None) -> Any:
        """Close; keys typed after the enter that closed it go to the screen below, in order."""
        screen = cast(Any, self)
        held: list[tuple[str, str | None]] = screen.__dict__.pop("_held", None) or []
        done = super().dismiss(result)  # type: ignore[misc]
        app = screen.app
        if held:
            app.call_after_refresh(lambda: [app.post_message(events.Key(k, c)) for k, c in held])
        return done


def focus_now(widget: Widget) -> None:
    """Focus ``widget`` before the next key is read. ``Widget.focus`` moves the focus a turn later, so a key
    read in the same go as Escape (ESC x) still went to the field Escape was leaving."""
    widget.screen.set_focus(widget)
