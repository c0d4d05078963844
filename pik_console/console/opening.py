"""Paint first, open after: the console draws its chrome (header, tabs, footer, a pane saying what is being
opened) before the backend is imported, then opens it in a thread and fills the panes when it is ready.

The backend's import (pydantic models, pydantic-settings, boto3 for a stack) and its opening are most of a
cold start; here they run while the user already sees the console. Keys typed meanwhile wait in a queue
and reach the console, in order, once it is ready; q leaves at once. If the backend cannot be opened the
panes say why, other keys say it again, and the error is kept for the command line to report on exit
(the same line and exit code as a command that failed to open it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from pik_console.text import safe

if TYPE_CHECKING:
    from backend.kit import Kit

QUIT_KEYS = frozenset({"q", "ctrl+q", "ctrl+c"})
"""Keys that leave the console at once, even before the backend is open."""

MAX_QUEUED_KEYS = 200
"""Keys typed before the backend is open are kept up to this many (a held key repeats; the rest are
refused with a notification)."""


class Opening(Static):
    """The pane shown in every tab until the backend is open: what is being opened, or why it could not be."""

    def __init__(self, what: str, *, id: str | None = None) -> None:
        super().__init__(Text(f"{what}…", style="dim"), id=id, classes="opening", markup=False)

    def failed(self, error: str) -> None:
        text = Text("Could not open it: ", style="bold")
        text.append(safe(error, 2000))
        text.append("\n\nPress q to leave; the same error is printed when the console closes.", style="dim")
        self.update(text)


class KitOpened(Message):
    """The backend is open (``kit``), or could not be opened (``error``)."""

    def __init__(self, kit: Kit | None, error: BaseException | None) -> None:
        super().__init__()
        self.kit = kit
        self.error = error


class Opener:
    """Opens the backend once, in a worker thread, and closes it when the console is done with it, even when
    the console closed before the opening ended (then the late backend is closed as soon as it is open)."""

    def __init__(self, open_kit: Callable[[], Kit], *, warm: Callable[[], Any] | None = None) -> None:
        self._open_kit = open_kit
        self._warm = warm
        self._lock = threading.Lock()
        self._closed = False
        self.kit: Kit | None = None

    def open(self) -> KitOpened:
        """Open the backend (in the calling thread), then run ``warm`` (imports the first pane needs, so the
        UI thread does not stop for them). Never raises: the error comes back in the message."""
        try:
            kit = self._open_kit()
        except Exception as exc:  # reported on screen, and by the command line on exit
            return KitOpened(None, exc)
        with self._lock:
            if self._closed:
                kit.close()
                return KitOpened(None, None)
            self.kit = kit
        if self._warm is not None:
            # An import that fails here fails again, visibly, when its pane is mounted.
            with contextlib.suppress(Exception):
                self._warm()
        return KitOpened(kit, None)

    def close(self) -> None:
        """Close the backend if it was opened; one opened later is closed as it opens."""
        with self._lock:
            self._closed = True
            kit, self.kit = self.kit, None
        if kit is not None:
            kit.close()
