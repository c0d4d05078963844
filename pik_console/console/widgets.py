"""Form widgets with the keys of a console: a choice is opened with enter or space, never by the arrow
keys, so a Down pressed after choosing a status moves on instead of opening the menu again."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Select


class FormSelect(Select[str], inherit_bindings=False):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter,space", "show_overlay", "Choose", show=False, tooltip="Open the choices", id="select.open"
        ),
    ]
