"""Showing untrusted text in a terminal (DESIGN invariant 10): data is printed literally, never obeyed.

Control characters (C0, DEL, C1) and the Unicode format characters that reorder or hide text (bidi
overrides, zero-width marks) are shown as escapes, so an event cannot move the cursor, recolour the screen
or disguise itself.
"""

from __future__ import annotations

import unicodedata


def safe(text: str, limit: int | None = None) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    result = "".join(out)
    if limit is not None and len(result) > limit:
        result = result[: max(limit - 1, 0)] + "…"
    return result


def preview(data: bytes, limit: int = 200) -> str:
    """A readable, safe preview of (possibly invalid) bytes."""
    return safe(data.decode("utf-8", errors="replace"), limit)
