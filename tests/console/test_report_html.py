"""``pik report --format html``: one self-contained page with the report's facts and its charts, end to end
on the demo workspace; the findings hook; the charts' scales; the lag histogram's facts."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from backend.kit import open_local
from backend.services.report import LAG_BUCKETS
from pik_console.cli import main
from pik_console.report import build_report
from pik_console.svg import Bar, Point, Stack, bar_chart, scale, stacked_bars, timeline

ENTITY, DAY = "user_001", "2025-12-22"


def _report(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["report", *args], out, err)
    return code, out.getvalue(), err.getvalue()


class Page(HTMLParser):
    """The page as a reader's browser sees it: elements with their attributes, the text, titles by svg."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def ids(self) -> list[str]:
        return [str(attrs["id"]) for _, attrs in self.elements if attrs.get("id")]


@pytest.fixture(scope="module")
def page_file(demo_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("html") / "report.html"
    code, text, err = _report(
        "--workspace", str(demo_ws), "--entity", ENTITY, "--day", DAY, "--format", "html", "--out", str(out)
    )
    assert code == 0, err
    return out, text


def test_the_html_report_is_one_file_that_fetches_nothing(page_file: tuple[Path, str]) -> None:
    path, said = page_file
    assert said == f"Report written to {path}\n"
    html = path.read_text(encoding="utf-8")
    page = Page(html)
    csp = [a for a in page.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0]["content"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    tags = {tag for tag, _ in page.elements}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignobject"}
    # Nothing refers to anything outside the page.
    for tag, attrs in page.elements:
        assert not {"src", "href", "xlink:href", "srcset", "action"} & set(attrs), tag
        assert not any(name.startswith("on") for name in attrs), tag
    assert (
        "url(" not in html
        and "@import" not in html
        and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    )


def test_the_html_report_has_every_section_and_its_charts(page_file: tuple[Path, str]) -> None:
    page = Page(page_file[0].read_text(encoding="utf-8"))
    # The overview's findings of the day first (pik report asks the overview for them).
    assert page.ids() == ["findings", "events", "lag", "days", "replays", "versions", "checklist"]
    # Charts: the lag histogram, events per day, and one timeline per metric (three in the demo).
    titles = [t for t in page.text if t.startswith(("Lag of", "Events per day of", "daily_event_count of",
                                                    "purchases_eur_cents of", "steps_total of"))]  # fmt: skip
    assert len(page.tags("svg")) == 5
    assert "Lag of the 10 accepted events of user_001 on 2025-12-22" in titles
    text = "\n".join(page.text)
    # The histogram: 10 accepted events, 4 of them late by 1-2 days or more (all bars titled with counts).
    assert "4 events with a lag of 1-10 s" in text and "2 events with a lag of ≥ 2 d" in text
    # Events per day: the incident day has 6 on time and 4 late, and is highlighted.
    assert "12-22 on_time: 6" in text and "12-22 late: 4" in text
    assert len([a for a in page.tags("rect") if a.get("class") == "highlight"]) == 1
    assert "12-26 duplicates: 5" in text
    # The version timeline: steps_total went from 0 to 2,581 in version 2.
    assert "version 2: 2,581 from 3 inputs, computed 2025-12-24T12:00:00.000Z" in text
    assert "SENT" in text and "oncall@demo" in text
    assert "mobile/heartbeat, event days [2025-12-22, 2025-12-23), limit 500, duplicates excluded" in text
    assert any("went from 0 to 2,581" in t for t in page.text)
    # The checklist: the same four ticks as the Markdown report, the root cause left to the reader.
    assert text.count("☑") == 4 and text.count("☐") == 1
    assert "Root cause documented" in text


def test_markdown_stays_the_default(demo_ws: Path) -> None:
    args = ("--workspace", str(demo_ws), "--entity", ENTITY, "--day", DAY)
    code, default, _ = _report(*args)
    assert code == 0 and default.startswith("# Incident report: `user_001` on 2025-12-22")
    code, markdown, _ = _report(*args, "--format", "markdown")
    # The same report, but for the minute it says it was written in.
    assert code == 0 and markdown.splitlines()[3:] == default.splitlines()[3:]
    assert "## Findings" in default  # the overview's findings of the day, in both formats


def test_json_carries_the_html(demo_ws: Path) -> None:
    code, text, err = _report(
        "--workspace", str(demo_ws), "--entity", ENTITY, "--day", DAY, "--format", "HTML", "--json"
    )
    assert code == 0, err
    answer = json.loads(text)
    assert answer["format"] == "html" and answer["entity"] == ENTITY and answer["day"] == DAY
    assert answer["html"].startswith("<!DOCTYPE html>") and "markdown" not in answer


@pytest.mark.parametrize("fmt", ["pdf", "", "md<script>"])
def test_a_bad_format_is_one_line_and_exit_2(demo_ws: Path, fmt: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, text, err = _report(
        "--workspace", str(demo_ws), "--entity", ENTITY, "--day", DAY, "--format", fmt, "--out", str(out)
    )
    assert code == 2 and text == "" and not out.exists()
    assert err.count("\n") == 1 and "--format must be markdown or html" in err and "Traceback" not in err


def test_an_unwritable_out_is_a_failure_not_a_traceback(demo_ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "r.html"
    code, _, err = _report(
        "--workspace",
        str(demo_ws),
        "--entity",
        ENTITY,
        "--day",
        DAY,
        "--format",
        "html",
        "--out",
        str(target),
    )
    assert code == 1 and err.count("\n") == 1 and "cannot write" in err


FINDINGS = [
    {
        "kind": "late_day",
        "severity": "high",
        "source": "mobile",
        "event_type": "heartbeat",
        "entity_id": None,
        "day": DAY,
        "summary": "mobile/heartbeat of 2025-12-22 arrived two days late.",
        "evidence": {"late": 194, "p50_lag_ms": 165_600_000, "hours": ["06", "10"]},
        "next": "pik lag --source mobile --type heartbeat --day 2025-12-22",
    }
]


def test_findings_are_rendered_when_given(demo_ws: Path) -> None:
    kit = open_local(demo_ws, create=False, read_only=True)
    try:
        html = build_report(kit, ENTITY, DAY, fmt="html", findings=FINDINGS)
        empty = build_report(kit, ENTITY, DAY, fmt="html", findings=[])
        markdown = build_report(kit, ENTITY, DAY, findings=FINDINGS)
        with pytest.raises(ValueError, match="format must be one of markdown, html"):
            build_report(kit, ENTITY, DAY, fmt="pdf")
    finally:
        kit.close()
    page = Page(html)
    assert page.ids()[0] == "findings"
    text = "\n".join(page.text)
    for expected in ("high", "late_day", "mobile/heartbeat", DAY, FINDINGS[0]["summary"], '["06", "10"]',
                     "p50_lag_ms", "165600000", FINDINGS[0]["next"]):  # fmt: skip
        assert expected in text, expected
    assert [a["class"] for a in page.tags("span") if "sev" in str(a.get("class"))] == ["sev sev-high"]
    assert "No finding for this window." in "\n".join(Page(empty).text)
    assert "## Findings" in markdown and "**high** late_day (mobile/heartbeat)" in markdown
    assert f"next: `{FINDINGS[0]['next']}`" in markdown


def test_the_lag_histogram_counts_every_accepted_event_once(demo_ws: Path) -> None:
    kit = open_local(demo_ws, create=False, read_only=True)
    try:
        facts = kit.report().gather(ENTITY, DAY)
    finally:
        kit.close()
    assert [b.label for b in facts.lag_histogram] == [label for label, _ in LAG_BUCKETS]
    assert sum(b.events for b in facts.lag_histogram) == facts.events == 10
    late = sum(b.events for b in facts.lag_histogram if b.low_ms >= 3_600_000)
    assert late == facts.late_arrivals == 4
    assert facts.lag_histogram[-1].high_ms is None
    assert all(
        b.high_ms == n.low_ms for b, n in zip(facts.lag_histogram, facts.lag_histogram[1:], strict=False)
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, (1, 1)),
        (4, (4, 4)),
        (10, (10, 2)),
        (17, (20, 4)),
        (2581, (3000, 3)),
        (0.3, (0.3, 3)),
        (100, (100, 4)),
    ],
)
def test_axis_scales_hold_the_value_in_whole_steps(value: float, expected: tuple[float, int]) -> None:
    top, steps = scale(value)
    assert (pytest.approx(top), steps) == expected
    assert top >= value and 1 <= steps <= 5


def _xml(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # every chart is well-formed XML


def test_charts_are_well_formed_svg_with_their_data() -> None:
    ns = "{http://www.w3.org/2000/svg}"
    bars = _xml(bar_chart([Bar("a", 3), Bar("b", 0, "late")], title="t"))
    rects = bars.findall(f"{ns}rect")
    assert [r.get("class") for r in rects] == ["bar series-main", "bar series-late"]
    assert float(rects[1].get("height", "x")) == 0 and float(rects[0].get("height", "0")) > 0
    stacks = _xml(stacked_bars([Stack("d1", [("on_time", 2), ("late", 1)], highlight=True)], title="s",
                               legend=[("on_time", "on time"), ("late", "late")]))  # fmt: skip
    titles = [t.text for t in stacks.iter(f"{ns}title")]
    assert titles == ["s", "d1 on_time: 2", "d1 late: 1"]
    line = _xml(timeline([Point("v1", None), Point("v2", 5.5)], title="m"))
    points = line.findall(f"{ns}circle")
    assert [p.get("class") for p in points] == ["point hollow", "point"]
    assert [t.text for t in line.iter(f"{ns}text") if t.text in ("none", "5.5")] == ["none", "5.5"]


def test_a_timeline_of_negative_values_keeps_them_on_the_chart() -> None:
    svg = _xml(timeline([Point("v1", -40), Point("v2", 10)], title="m", height=200))
    ys = [float(c.get("cy", "nan")) for c in svg.iter("{http://www.w3.org/2000/svg}circle")]
    assert all(0 <= y <= 200 for y in ys) and ys[0] > ys[1]
