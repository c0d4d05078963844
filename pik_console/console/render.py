"""Renderables for data (invariant 10): every value from the store becomes ``rich.text.Text`` built from
plain strings with control characters escaped. Nothing built from data is ever parsed as markup - note
that Textual's DataTable parses ``str`` cells as markup, so cells are always Text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from backend.times import human_ms
from pik_console.text import safe

BAR_FULL = "█"
BAR_PARTS = " ▏▎▍▌▋▊▉"


def t(value: Any, style: str = "", limit: int | None = None) -> Text:
    """Data as literal text: escaped control characters, no markup."""
    return Text(safe("" if value is None else str(value), limit), style=style)


def num(value: int | float | None, style: str = "") -> Text:
    if value is None:
        return Text("-", style="dim", justify="right")
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"
    return Text(text, style=style, justify="right")


def title(text: str) -> Text:
    return Text(text, style="bold underline")


def fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table; values are data."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(Text(key), value if isinstance(value, Text) else t(value))
    return table


def bar(value: float, top: float, width: int, style: str = "cyan") -> Text:
    """A horizontal bar of ``value`` out of ``top`` in ``width`` cells, in eighths."""
    if top <= 0 or value <= 0 or width <= 0:
        return Text("", end="")
    eighths = round(min(value / top, 1.0) * width * 8)
    eighths = max(eighths, 1)
    full, part = divmod(eighths, 8)
    return Text(BAR_FULL * full + (BAR_PARTS[part] if part else ""), style=style, end="")


def stacked_bar(parts: Sequence[tuple[float, str]], top: float, width: int) -> Text:
    """Bars side by side (e.g. on time, then late), scaled together."""
    out = Text(end="")
    for value, style in parts:
        if value > 0:
            out.append_text(bar(value, top, width, style))
    return out


def json_text(data: bytes) -> RenderableType:
    """Raw event bytes as pretty, highlighted JSON when they parse, else as escaped text. Either way the
    text is literal: escapes in strings stay escapes, markup stays characters."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return t(data.decode("utf-8", errors="replace"))
    pretty = json.dumps(parsed, indent=2, ensure_ascii=False, sort_keys=False)
    # json.dumps escapes C0 controls; safe() catches C1 controls, bidi overrides and the like per line.
    text = Text("\n".join(safe(line) for line in pretty.split("\n")))
    JSONHighlighter().highlight(text)  # styles spans by regex; the characters stay what they are
    return text


def hexdump(data: bytes, limit: int = 256, width: int = 8) -> Text:
    """Offset, hex and printable ASCII, ``width`` bytes a line (8 fits the detail pane)."""
    lines = []
    for offset in range(0, min(len(data), limit), width):
        chunk = data[offset : offset + width]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        shown = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:04x}  {hexes:<{3 * width - 1}}  {shown}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit:,} more bytes")
    return Text("\n".join(lines), style="dim")


def group(*items: RenderableType | None) -> Group:
    return Group(*(i for i in items if i is not None))


def work_line(label: str, done: int, total: int | None, elapsed_s: float, unit: str, extra: str = "") -> Text:
    """Long work as people follow it: ``sending: 12,340 of 300,000 messages · 4,100/s · ETA 1m 10s``."""
    text = Text(f"{label}: ", style="bold")
    text.append(f"{done:,}")
    text.append(f" of {total:,} {unit}" if total else f" {unit}")
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if rate > 0:
        text.append(f" · {rate:,.0f}/s")
        if total and done < total:
            text.append(f" · ETA {human_ms(int((total - done) / rate * 1000))}")
    text.append(f" · {human_ms(int(elapsed_s * 1000))} so far", style="dim")
    if extra:
        text.append(f" · {extra}")
    text.append("  (c cancels)", style="dim")
    return text
