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
from textual import events, work
from textual.message import Message
from textual.widgets import Static

from pik_console.text import safe

if TYPE_CHECKING:
    from backend.kit import Kit

QUIT_KEYS = frozenset({"q", "ctrl+q", "ctrl+c"})
"""Keys that leave the console at once, even before the backend is open."""

KEY_SETTLE_REFRESHES = 50
"""Refreshes a replayed key may take to mount the pane it asked for before the next key is replayed."""

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


class OpeningNoticed(Message):
    """The opening says what it is doing that takes a while (``text``: an upgrade of the workspace)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


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
        self._on_notice: Callable[[str], None] | None = None

    def notice(self, text: str) -> None:
        """What the opening is doing that takes a while (an upgrade): the console shows it in place of what it
        said it was opening. Called from the opening's thread."""
        if self._on_notice is not None:
            self._on_notice(text)

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


class PaintFirst:
    """What PikConsole does while its backend opens: open it after the first frame, keep the keys typed
    meanwhile and replay them, say why when it could not be opened. (A part of PikConsole, kept here with
    the rest of the opening; it calls the console's ``_start``, ``action_pane`` and ``when_mounted``.)"""

    kit: Kit
    _mounting: set[str]
    run_actions: Callable[[str], Any]
    screen_stack: list[Any]

    def init_opening(self, kit: Kit | None, opener: Opener | None, opening: str) -> None:
        if (kit is None) == (opener is None):
            raise ValueError("PikConsole needs either an opened kit or an opener")
        self.kit = kit  # type: ignore[assignment]  # None only until the opener is done
        self.opener = opener
        self.open_error: BaseException | None = None
        self._opening = opening
        # Keys typed (key, character) and palette actions chosen ("", actions) before the backend is open.
        self._queued_keys: list[tuple[str, str | None]] = []
        self._opener_thread: threading.Thread | None = None
        self._replaying = False  # the held keys are being replayed (keys typed meanwhile join them)
        self._replayed: set[int] = set()  # the ids of the replayed key events, which pass
        self._waiting: list[tuple[str, Callable[[Any], None], bool]] = []

    @property
    def opening_note(self) -> str:
        """What the header says until the backend is open."""
        return "Could not open it: q leaves" if self.open_error is not None else f"{self._opening}…"

    @property
    def _still(self) -> str:
        return f"still {self._opening[:1].lower()}{self._opening[1:]}, and {MAX_QUEUED_KEYS} keys are waiting"

    @property
    def ready(self) -> bool:
        """The backend is open (the panes can be mounted and read)."""
        return self.kit is not None

    def _open_backend(self) -> None:
        """Open the backend in a thread of its own, not a Textual worker: those run in the event loop's
        executor, which the process waits for when it ends, so q during a slow opening (a stack that does
        not answer) would hang until the opening timed out. This thread is a daemon: q leaves at once."""
        opener = self.opener
        assert opener is not None
        opener._on_notice = lambda text: self.post_message(OpeningNoticed(text))
        self._opener_thread = threading.Thread(
            target=lambda: self.post_message(opener.open()), name="pik-open", daemon=True
        )
        self._opener_thread.start()

    @property
    def opening_now(self) -> bool:
        """The backend is being opened: neither open nor failed yet (what it became not yet handled)."""
        return self._opener_thread is not None and not self.ready and self.open_error is None

    def on_opening_noticed(self, message: OpeningNoticed) -> None:
        if self.opening_now:
            self._opening = message.text[:1].upper() + message.text[1:]
            for placeholder in self.query(Opening):
                placeholder.update(Text(f"{self._opening}…", style="dim"))
            self._show_header()

    def on_kit_opened(self, message: KitOpened) -> None:
        if message.kit is None:
            if message.error is None:
                return  # the console closed while the backend was being opened
            self.open_error = message.error
            self._queued_keys.clear()
            for placeholder in self.query(Opening):
                placeholder.failed(str(message.error))
            self._show_header()
            self.notify(f"Could not open it: {message.error}", severity="error", timeout=30, markup=False)
            return
        self.kit = message.kit
        self._show_header()
        self.refresh_bindings()
        self.query(Opening).remove()
        self._start()
        # The pane in view (the first, or a tab clicked meanwhile) is shown, read and its list focused, unless
        # a key typed meanwhile, replayed below, asks for another. Its tab was activated before the backend
        # was open, when nothing could be read: it is read now (a slow opening left the Overview unread).
        shown = self.active_pane
        self.action_pane(shown)
        self.when_mounted(shown, lambda pane: pane.apply_context(self.context), mount=True)
        waiting, self._waiting = self._waiting, []
        for name, then, mount in waiting:
            self.when_mounted(name, then, mount=mount)
        if self._queued_keys:
            # In the order typed, once the first pane shows the context (a field it fills must not overwrite
            # what was typed into it), as if typed at the start-up of a console given an open backend. Keys
            # typed during the replay join its end.
            self._replaying = True
            self.when_mounted("events", lambda _: self.call_after_refresh(self._replay_keys), mount=True)

    def holds_key(self, event: events.Key) -> bool:
        """Whether ``event`` must wait (or be refused): typed before the backend is open or while the keys
        typed then are replayed, and not a key that leaves."""
        if event.key in QUIT_KEYS or id(event) in self._replayed:
            return False
        if len(self.screen_stack) > 1:
            return False  # typed into a screen over the console's (the command palette): that screen's
        return not self.ready or self._replaying

    @work(exclusive=True, group="held-keys", exit_on_error=False)
    async def _replay_keys(self) -> None:
        """The keys held while the backend opened, in order, each once the console has caught up with the
        one before (as typed keys arrive): a key that mounts a pane or moves the focus (/) has done it
        before the next key is read."""
        try:
            while self._queued_keys:
                key, character = self._queued_keys.pop(0)
                if not key:  # a palette action chosen while it opened
                    await self.run_actions(character or "")
                    await self.screen.wait_for_refresh()
                    continue
                event = events.Key(key, character)
                self._replayed.add(id(event))
                try:
                    self.post_message(event)
                    for _ in range(KEY_SETTLE_REFRESHES):
                        await self.screen.wait_for_refresh()  # the key handled, what it asked for drawn
                        if not (self._mounting - self._panes_ready()):
                            break
                    await self.screen.wait_for_refresh()  # a focus the key moved (it moves a turn later)
                finally:
                    self._replayed.discard(id(event))
        finally:
            self._replaying = False
            self._queued_keys.clear()

    def close_backend(self) -> None:
        """Close the backend the opener opened (now, or as soon as it is open)."""
        if self.opener is not None:
            self.opener.close()

    def hold_actions(self, actions: str, title: str) -> bool:
        """Whether the palette's ``actions`` must wait like a key typed meanwhile (True: held, or refused with
        the reason once the opening failed); False when they can run now."""
        if self.ready and not self._replaying:
            return False
        self._hold(("", actions), title, f"{title}: runs as soon as it is open ({self._opening}…)")
        return True

    def _hold_key(self, event: events.Key) -> None:
        """A key typed before the backend is open waits for it (q leaves at once); once the backend has
        failed to open, the key is refused and says why."""
        event.prevent_default()
        event.stop()
        self._hold((event.key, event.character), "That key", None)

    def _hold(self, entry: tuple[str, str | None], what: str, held: str | None) -> None:
        """Queue ``entry`` (a key, or a palette action) for when the backend is open, saying ``held`` if
        given; refused with the reason once the opening failed, or when too many are waiting."""
        if self.open_error is not None:
            self.notify(
                f"{what}: nothing to act on, it could not be opened ({self.open_error}). Press q to leave.",
                severity="error",
                markup=False,
            )
        elif len(self._queued_keys) < MAX_QUEUED_KEYS:
            self._queued_keys.append(entry)
            if held is not None:
                self.notify(held, markup=False)
        else:
            self.notify(f"{what} was not kept: {self._still}", severity="warning", markup=False)
