"""Escape and the key after it, read in one go, stay two keys.

A terminal sends Escape as the byte ESC, and Alt+key as ESC followed by the key. When Escape and the next key
arrive in the same read (a fast hand, a remote session that joins the bytes), Textual's terminal parser takes
them for one key: ESC x becomes alt+x, whose character "x" an input field types, and ESC 2 becomes "™" (the
character a Mac keyboard's Option+2 types). Either way Escape was lost and a command key typed into the field
it was meant to leave. The console binds no Alt key, so here ESC followed by a printable key is always Escape,
then that key: what was pressed.

The parser is Textual's; :func:`install` has the terminal driver use :class:`EscapeThenKey`, which differs
from it in that one case only (escape sequences, Alt+arrow keys, ESC b / ESC f word moves are read as before).
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import events
from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
from textual._xterm_parser import XTermParser

ESC = "\x1b"


class EscapeThenKey(XTermParser):
    """Textual's terminal parser, except that ESC and a printable key are read as Escape, then the key."""

    def _sequence_to_key_events(self, sequence: str, alt: bool = False) -> Iterable[events.Key]:
        if alt and len(sequence) == 1 and sequence.isprintable():
            yield events.Key("escape", ESC)  # alt+x, or "/" with the ESC before it dropped
            yield from super()._sequence_to_key_events(sequence)
        elif (
            len(sequence) == 2
            and sequence[0] == ESC
            and sequence[1].isprintable()
            and isinstance(ANSI_SEQUENCES_KEYS.get(sequence), str)
        ):
            yield events.Key("escape", ESC)  # ESC 2 read as "™", ESC - as "–"
            yield from super()._sequence_to_key_events(sequence[1])
        else:
            yield from super()._sequence_to_key_events(sequence)


def install() -> bool:
    """Have the terminal driver read keys with :class:`EscapeThenKey`. False where the driver is not the one
    this was written for (another platform, another Textual): keys are then read as Textual reads them."""
    try:
        from textual.drivers import linux_driver
    except ImportError:  # pragma: no cover - not a POSIX terminal
        return False
    if getattr(linux_driver, "XTermParser", None) not in (XTermParser, EscapeThenKey):
        return False
    linux_driver.XTermParser = EscapeThenKey  # type: ignore[attr-defined]
    return True
