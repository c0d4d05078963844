"""The console's header line: the backend (workspace path, or region and stack), the context, and the
READ-ONLY badge. While the backend is still being opened it says so."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from pik_console.console.context import Context
from pik_console.text import safe

if TYPE_CHECKING:
    from backend.kit import Kit

# Below this many columns the console is laid out for a small terminal (80x24): stacked panes, compact
# forms, the event detail on enter instead of beside the list.
NARROW = 110


class ConsoleHeader(Horizontal):
    """The backend (workspace path, or region and stack), the context, and the READ-ONLY badge."""

    def compose(self) -> ComposeResult:
        yield Static("", id="header-title", markup=False)
        yield Static("", id="header-context", markup=False)
        yield Static(Text(" READ-ONLY ", style="bold"), id="header-badge", markup=False)

    def show(self, kit: Kit | None, context: Context, width: int = 160, opening: str = "") -> None:
        """``kit`` None: the backend is not open yet (``opening`` says what is being opened, or why not)."""
        narrow = width < NARROW
        described = safe(context.describe(short=narrow), 120)
        title = Text("" if narrow else " pik console ", style="bold")
        if kit is None:
            title.append(f" {safe(opening, 200)}", style="dim")
            self.query_one("#header-title", Static).update(title)
            self.query_one("#header-context", Static).update(Text(described))
            self.query_one("#header-badge", Static).display = False
            return
        title.append(f" {kit.name} · ", style="dim")
        # The location keeps its end (the folder's name, the stack) when the line is short.
        room = width - (len(described) + 2) - len(title) - (11 if kit.read_only else 0) - 1
        location = safe(kit.location, 200)
        if len(location) > room:
            location = "…" + location[-(room - 1) :] if room >= 8 else ""
        title.append(location)
        self.query_one("#header-title", Static).update(title)
        self.query_one("#header-context", Static).update(Text(described))
        self.query_one("#header-badge", Static).display = kit.read_only
