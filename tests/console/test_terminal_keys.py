"""Escape and the key after it, read in one go, stay two keys (pik_console.console.terminal_keys)."""

from __future__ import annotations

import pytest
from textual._xterm_parser import XTermParser

from pik_console.console.terminal_keys import EscapeThenKey, install


def keys(parser: XTermParser, data: str) -> list[tuple[str, str | None]]:
    return [(e.key, e.character) for e in [*parser.feed(data), *parser.feed("")] if hasattr(e, "key")]


@pytest.mark.parametrize(
    ("data", "textual", "console"),
    [
        ("\x1b2", [("trade_mark_sign", "™")], [("escape", "\x1b"), ("2", "2")]),
        ("\x1b-", [("en_dash", "–")], [("escape", "\x1b"), ("minus", "-")]),
        ("\x1bx", [("alt+x", "x")], [("escape", "\x1b"), ("x", "x")]),
        ("\x1b/", [("slash", "/")], [("escape", "\x1b"), ("slash", "/")]),
        (
            "a\x1bpb",
            [("a", "a"), ("alt+p", "p"), ("b", "b")],
            [("a", "a"), ("escape", "\x1b"), ("p", "p"), ("b", "b")],
        ),
    ],
)
def test_escape_then_a_printable_key_is_two_keys(
    data: str, textual: list[object], console: list[object]
) -> None:
    assert keys(XTermParser(), data) == textual  # what Textual alone makes of it
    assert keys(EscapeThenKey(), data) == console


@pytest.mark.parametrize(
    "data",
    [
        "\x1b",
        "\x1b\x1b",
        "\x1b[A",
        "\x1b[1;3D",
        "\x1bOP",
        "\x1bb",
        "\x1bf",
        "™",
        "£",
        "2",
        "\x1b[200~x\x1b[201~",
    ],
)
def test_every_other_sequence_is_read_as_textual_reads_it(data: str) -> None:
    def read(parser: XTermParser) -> list[object]:
        return [repr(e) for e in [*parser.feed(data), *parser.feed("")]]

    assert read(EscapeThenKey()) == read(XTermParser())


def test_the_terminal_driver_reads_keys_with_it() -> None:
    from textual.drivers import linux_driver

    before = linux_driver.XTermParser
    try:
        assert install() is True
        assert linux_driver.XTermParser is EscapeThenKey
        assert install() is True  # twice is once
    finally:
        linux_driver.XTermParser = before  # type: ignore[attr-defined]
