"""Security: untrusted text stays text in ``pik report --format html``.

Every string the page shows comes from data somebody else wrote (entity ids, sources and types, actors,
replay ids and refusal reasons, metric names, explanations built from payload values, the overview's
findings). Here each of them carries HTML, SVG and terminal syntax; the page must have exactly the elements
and attributes of the same report over plain data (no script, no event handler, no reference out of the
page), and each value must read as its own text, control characters shown as escapes.
"""

from __future__ import annotations

import re
from enum import Enum
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from backend.kit import open_local
from backend.services.report import IncidentReport
from backend.services.scope import describe_scope
from pik_console.report_html import render_html
from pik_console.text import safe
from tests.reliability.security_support import DAY, T0, cli
from tests.reliability.test_security_report import (
    HOSTILE_ACTOR,
    HOSTILE_ENTITY,
    HOSTILE_REPLAY_ID,
    PLAIN,
    _report_workspace,
)

# Markup for HTML and SVG, a CDATA end, an attribute break-out, and terminal escapes.
HOSTILE = (
    "<script>alert(1)</script>\"><img src=x onerror=alert(2)>'><svg onload=alert(3)>]]></svg></text>"
    "<!-- x --><style>*{}</style>&amp;&#60;\x1b[31m\x1b]8;;http://evil.example\x07\u202e\x00"
)
FINDING = {
    "kind": "late_day",
    "severity": "high",
    "source": "web",
    "event_type": "click",
    "entity_id": "e",
    "day": DAY,
    "summary": "arrived late",
    "evidence": {"late": 3, "reason": "r", "top": ["a", "b"]},
    "next": "pik lag --source web --type click --day 2025-12-01",
}


class Page(HTMLParser):
    """Elements (with attribute names and the values of ``class``), and the text a reader sees."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, tuple[str, ...]]] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.chunks: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A label too long for its column is slanted: layout, not structure.
        self.elements.append((tag, tuple(sorted(name for name, _ in attrs if name != "transform"))))
        self.attrs += attrs

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"a comment came from the data: {data!r}")

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def _poison(value: Any) -> Any:
    """``value`` with HOSTILE after every non-empty string in it (keys of mappings too), enums as they are,
    so that the report's decisions (equal days, a line starting with "- ") come out the same."""
    if isinstance(value, dict) and "evidence" in value:  # a finding: its shape is the overview's
        return {k: _poison(v) for k, v in value.items()}
    if isinstance(value, Enum) or value is None:
        return value
    if isinstance(value, str):
        return value + HOSTILE if value else value
    if isinstance(value, BaseModel):
        return value.model_copy(update={k: _poison(getattr(value, k)) for k in type(value).model_fields})
    if isinstance(value, list):
        return [_poison(v) for v in value]
    if isinstance(value, dict):
        return {_poison(k): _poison(v) for k, v in value.items()}
    return value


def _shown(f: IncidentReport, findings: list[dict[str, Any]]) -> list[str]:
    """Every value the page shows in full (event ids are cut to 16 characters, so not among them)."""
    shown = [f.entity_id, f.day, f.backend, f.location, f.window_start, f.window_end, *f.drift]
    shown += [x for p in f.partitions for x in (p.source, p.event_type)]
    shown += [x for r in f.largest_late for x in (r.source, r.event_type, r.event_time, r.ingest_time)]
    shown += [x for lag in f.lag for x in (lag.source, lag.event_type)]
    shown += [b.label for b in f.lag_histogram] + [g.day for g in f.gaps.days]
    for a in f.replays:
        shown += [a.replay_id, a.actor, a.started_at, str(a.error), describe_scope(a.request)]
    shown += [x for v in f.versions for x in (v.metric, v.computed_at, *v.replay_ids)]
    shown += [line.removeprefix("- ") for c in f.changes for line in (c.metric, *c.explanation)]
    for item in findings:
        shown += [str(v) for k, v in item.items() if k != "evidence"]
        shown += [x for k, v in item["evidence"].items() for x in (k, v if isinstance(v, str) else "")]
    return [s for s in shown if s]


def _facts(ws: Path, entity: str) -> IncidentReport:
    kit = open_local(ws, create=False, read_only=True)
    try:
        return kit.report().gather(entity, DAY)
    finally:
        kit.close()


def _assert_inert(page: Page, html: str) -> None:
    tags = {tag for tag, _ in page.elements}
    assert not tags & {"script", "img", "iframe", "object", "embed", "foreignobject", "a", "base"}
    assert [tag for tag, _ in page.elements].count("style") == 1  # the page's own stylesheet
    names = {name for name, _ in page.attrs}
    assert all(re.fullmatch(r"rotate\([-0-9. ]+\)", str(v)) for n, v in page.attrs if n == "transform")
    assert not {n for n in names if n.startswith("on")}
    assert not names & {"src", "href", "xlink:href", "srcset", "action", "formaction"}
    for raw in ("\x1b", "\x07", "\x00", "\u202e", "<script", "<img", "<svg onload"):
        assert raw not in html, repr(raw)


def test_hostile_values_in_every_field_render_as_their_text(tmp_path: Path) -> None:
    plain = _refused(_facts(_ws(tmp_path / "plain", *PLAIN), PLAIN[0]))
    hostile_ws = _ws(tmp_path / "hostile", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    hostile = _poison(_refused(_facts(hostile_ws, HOSTILE_ENTITY)))
    hostile_findings = [_poison(FINDING)]
    plain_html = render_html(plain, findings=[FINDING], now=T0)
    hostile_html = render_html(hostile, findings=hostile_findings, now=T0)
    plain_page, page = Page(plain_html), Page(hostile_html)
    # The same elements with the same attributes, in the same order: no structure came from the data.
    assert page.elements == plain_page.elements
    # The same classes too, but a severity the page does not know gets none of its own.
    classes, plain_classes = ({v for n, v in p.attrs if n == "class"} for p in (page, plain_page))
    assert classes - {"sev"} == plain_classes - {"sev sev-high"} and "sev" in classes
    _assert_inert(page, hostile_html)
    # Every value the page shows reads as itself, control characters as escapes.
    shown = _shown(hostile, hostile_findings)
    assert len(shown) > 60 and all(HOSTILE in s for s in shown if s not in _shown(plain, [FINDING]))
    assert [s for s in shown if safe(s) not in page.text] == []


def _refused(f: IncidentReport) -> IncidentReport:
    """The report with a reason on its first replay (as a refused or failed replay has)."""
    first = f.replays[0].model_copy(update={"error": "over the size guard"})
    return f.model_copy(update={"replays": [first, *f.replays[1:]]})


def test_pik_report_html_over_a_hostile_workspace_is_inert(tmp_path: Path) -> None:
    ws = _ws(tmp_path / "hostile", HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID)
    out = tmp_path / "r.html"
    code, _, err = cli(
        "report", "--workspace", str(ws), "--entity", HOSTILE_ENTITY, "--day", DAY, "--format", "html",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    _assert_inert(page, html)
    for value in (HOSTILE_ENTITY, HOSTILE_ACTOR, HOSTILE_REPLAY_ID):
        assert safe(value) in page.text, value


def _ws(path: Path, entity: str, actor: str, replay_id: str) -> Path:
    _report_workspace(path, entity, actor, replay_id)
    return path
