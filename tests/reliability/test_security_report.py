"""Security: untrusted text stays text in what ``pik`` prints.

* ``pik report`` (Markdown): hostile entity ids, actors and replay ids render as their literal text, and
  the report has exactly the structure of one written for plain data; random strings of Markdown and
  terminal syntax stay text in every place the report puts data (the console's side is
  ``tests/console/test_literal_snapshots.py``). ``pik aggregates``, ``pik diff`` and ``pik replays``
  print no raw escape either.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.kit import open_local
from backend.model import ReplayRequest
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService
from backend.services.replay import ReplayService
from backend.services.scope import describe_scope, normalize
from backend.times import FixedClock
from pik_console.report import build_report, code, md
from pik_console.text import safe
from tests.reliability.conftest import soak
from tests.reliability.security_support import DAY, T0, WINDOW, cli, event

# An entity id may hold anything but control characters (invariant 8).
HOSTILE_ENTITY = (
    "[x](https://evil.example) ![i](https://evil.example/p.png) <img src=x onerror=alert(1)> "
    "<https://evil.example> a|b `t` ``` # *b* _e_ &lt; ~~s~~ \u202eevil\u202c"
)
# An actor is whoever the API caller or the OS user says they are.
HOSTILE_ACTOR = (
    "<script>alert(1)</script> [ok](https://evil.example) |\n## forged\n- [x] Root cause documented"
)
# A replay id arrives in queue messages, which anyone allowed to send to the queue writes.
HOSTILE_REPLAY_ID = "rp-1`](https://evil.example) | <b>x</b> ``\x1b[2J\n## forged"
PLAIN = ("plain-entity", "alice", "rp-plain")

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# Token types that data must never produce.
STRUCTURE = {"link_open", "image", "html_inline", "html_block", "em_open", "s_open", "heading_open"}


def _report_workspace(path: Path, entity: str, actor: str, replay_id: str) -> str:
    """A window with a replay by ``actor`` that made version 1, a late event and a message of replay
    ``replay_id`` that made version 2; returns its report (at a fixed time)."""
    clock = FixedClock(T0)
    store = LocalStore(path, clock=clock)
    ports = local_ports(store, clock=clock)
    try:
        IngestService(store, store, clock).ingest_batch([Received(event(entity, m)) for m in range(3)])
        replay = ReplayService(
            ports.investigate, ports.catalog, ports.audit, ports.queue, ports.aggregates, clock=clock
        )
        replay.execute(ReplayRequest(entity_id=entity, start_time=WINDOW[0], end_time=WINDOW[1]), actor=actor)
        processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, clock=clock)

        def process() -> None:
            while got := ports.queue.receive(10, 60):
                assert not processor.process([m.body for m in got]).failed
                ports.queue.delete([m.receipt_handle for m in got])

        process()
        clock.advance(timedelta(days=1))
        IngestService(store, store, clock).ingest_batch([Received(event(entity, 30))])
        message = {
            "event_id": "e",
            "entity_id": entity,
            "event_time": f"{DAY}T10:30:00Z",
            "replay_id": replay_id,
        }
        assert ports.queue.send_batch([json.dumps(message)]) == []
        process()
    finally:
        store.close()
    backend = open_local(path, create=False, read_only=True)
    try:
        return build_report(backend, entity, DAY, now=T0 + timedelta(days=2))
    finally:
        backend.close()


def _shape(markdown: str) -> list[tuple[str, str, int]]:
    """The report's structure: every block and inline token but the text itself."""
    out = []
    for token in _MD.parse(markdown):
        out.append((token.type, token.tag, token.nesting))
        for child in token.children or []:
            if child.type not in ("text", "text_special"):
                out.append((child.type, child.tag, child.nesting))
    return out


def _rendered_text(markdown: str) -> str:
    """What a reader sees: the text and code of every inline token, one line per token."""
    return "\n".join(
        "".join(c.content for c in token.children or [] if c.type in ("text", "text_special", "code_inline"))
        for token in _MD.parse(markdown)
        if token.type == "inline"
    )


def test_report_renders_hostile_data_as_its_literal_text(tmp_path: Path, figures: Any) -> None:
    plain = _report_workspace(tmp_path / "plain", *PLAIN)
    hostile = _report_workspace(tmp_path / "hostile", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    # The hostile report has exactly the plain one's structure: no link, image, HTML, heading, list item,
    # emphasis or table cell came from the data...
    plain_shape, hostile_shape = _shape(plain), _shape(hostile)
    assert hostile_shape == plain_shape
    assert not {t for t, _, _ in hostile_shape} & STRUCTURE - {t for t, _, _ in plain_shape}
    # ...and every hostile value reads as itself (control characters as escapes).
    text = _rendered_text(hostile)
    request = normalize(ReplayRequest(entity_id=HOSTILE_ENTITY, start_time=WINDOW[0], end_time=WINDOW[1]))
    for value in (HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID, describe_scope(request)):
        assert safe(value) in text, value
    for raw in ("\x1b", "\n## forged", "\u202e"):
        assert raw not in hostile
    figures(
        "pik report renders hostile data literally",
        hostile_values=4,
        tokens_compared=len(plain_shape),
        structure_from_data=0,
    )


# Pieces that mean something to Markdown, to the terminal, or to neither (random strings are drawn from them).
PIECES = [*"\\`*_[]()<>!|~&#-+=.:/ ", "\u3000", "\u00a0", "a", "b", "1", "é", "\n", "\t", "\x1b",
          "\u202e", "http://e.x", "www.e.x", "&lt;", "&#32;", "<img", "](", "![", "```", "---", "===", "1.",
          "    "]  # fmt: skip


def _in_every_context(value: str) -> str:
    """A document with ``value`` wherever the report puts data: a heading's code span, mid-sentence, a list
    item, the start of a line, a table's text cell and code cell."""
    return (
        f"# Report {code(value)} end\n\nText {md(value)} end.\n\n"
        f"- item {md(value)} end\n- {code(value)} end\n\n{md(value)} starts a line\n\n"
        f"| a | b | c |\n|---|---|---:|\n| {md(value)} | {code(value, cell=True)} | 1 |\n"
    )


def test_random_text_never_becomes_markdown_structure(figures: Any) -> None:
    rng = random.Random(6)
    plain = _shape(_in_every_context("plain"))
    cases = soak(1500, 20_000)
    for _ in range(cases):
        value = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        document = _in_every_context(value)
        assert _shape(document) == plain, value
        shown = safe(value)
        expected = [f"Report {shown} end", f"Text {shown} end.", f"item {shown} end", f"{shown} end",
                    f"{shown} starts a line", "a", "b", "c", shown, shown, "1"]  # fmt: skip
        assert _rendered_text(document).split("\n") == expected, value
    figures("report Markdown escaping (random text)", cases=cases, contexts=6, structure_from_data=0)


def test_pik_report_and_the_version_commands_print_no_raw_escape(tmp_path: Path) -> None:
    _report_workspace(tmp_path / "ws", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    ws = ["--workspace", str(tmp_path / "ws")]
    scope = ["--entity", HOSTILE_ENTITY, "--day", DAY]
    for argv in (["report", *scope], ["aggregates", *scope], ["diff", *scope], ["replays"]):
        code, out, err = cli(*argv, *ws)
        assert code == 0, err
        assert "\x1b" not in out and "\u202e" not in out, argv
        assert "\\x1b[2J" in out or argv == ["replays"], argv
