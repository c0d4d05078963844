"""Small charts as inline SVG, for the HTML report: bars, stacked bars, and a value-by-version line.

No chart library and no script: each function returns one ``<svg>`` element as a string, sized by its
``viewBox`` (it scales with the page and prints), styled only by class names (``bar``, ``series-<key>``,
``axis``, ``grid``, ``label``, ``highlight``) that the page's stylesheet colours for light and dark mode.
Every text that goes in (labels, titles, tooltips) is data as far as this module knows: it is made safe
(:func:`~pik_console.text.safe`) and escaped for XML, so nothing in it can become markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pik_console.text import safe

FONT = 12  # px, the labels' size in the viewBox
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 24, 40


def esc(value: object) -> str:
    """Text for an element's content or a quoted attribute: control characters made visible, then
    ``& < > " '`` escaped."""
    return html.escape(safe(str(value)), quote=True)


def scale(value: float) -> tuple[float, int]:
    """The top of an axis from 0 that holds ``value``, and how many grid steps divide it: each step 1, 2,
    2.5 or 5 times a power of ten (2.5 only from 25 up, so counts get whole-number ticks), at most 5
    steps. ``(1, 1)`` for 0 or less."""
    if value <= 0:
        return 1, 1
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = 10 * power
    for m in (1, 2, 2.5, 5):
        if m * power >= raw and (m != 2.5 or power >= 10):
            step = m * power
            break
    n = math.ceil(value / step - 1e-9)
    return step * n, n


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def _open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}" class="chart">',
        f"<title>{esc(title)}</title>",
    ]


def _y_axis(out: list[str], low: float, top: float, steps: int, width: int, height: int) -> None:
    """Grid lines and labels from low to top in ``steps`` steps; the plot spans PAD_TOP to
    height - PAD_BOTTOM."""
    plot_h = height - PAD_TOP - PAD_BOTTOM
    for i in range(steps + 1):
        y = height - PAD_BOTTOM - plot_h * i / steps
        out.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{width - PAD_RIGHT}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="label" x="{PAD_LEFT - 6}" y="{y + FONT / 3:.1f}" text-anchor="end" '
            f'font-size="{FONT}">{esc(_number(low + (top - low) * i / steps))}</text>'
        )


@dataclass(frozen=True)
class Bar:
    """One bar: its label under the axis, its value, a series key for its colour, a tooltip."""

    label: str
    value: float
    series: str = "main"
    tip: str = ""


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 640, height: int = 220) -> str:
    """Vertical bars side by side, each labelled under the axis and with its value above it."""
    out = _open(width, height, title)
    top, steps = scale(max((b.value for b in bars), default=0))
    _y_axis(out, 0, top, steps, width, height)
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(bars), 1)
    for i, b in enumerate(bars):
        h = plot_h * b.value / top
        x, y = PAD_LEFT + i * slot + slot * 0.15, height - PAD_BOTTOM - h
        out.append(
            f'<rect class="bar series-{esc(b.series)}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{h:.1f}"><title>{esc(b.tip or f"{b.label}: {_number(b.value)}")}</title></rect>'
        )
        if b.value:
            out.append(
                f'<text class="label value" x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                f'font-size="{FONT}">{esc(_number(b.value))}</text>'
            )
        out.append(
            f'<text class="label" x="{x + slot * 0.35:.1f}" y="{height - PAD_BOTTOM + FONT + 6}" '
            f'text-anchor="middle" font-size="{FONT}">{esc(b.label)}</text>'
        )
    out.append(_baseline(width, height))
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Stack:
    """One column of stacked bars: its label, the value of each series (bottom first), a highlight."""

    label: str
    values: Sequence[tuple[str, float]]  # (series key, value)
    highlight: bool = False


def stacked_bars(
    columns: Sequence[Stack],
    *,
    title: str,
    legend: Sequence[tuple[str, str]],
    width: int = 720,
    height: int = 240,
) -> str:
    """Columns of stacked bars, one series on top of the other, with a legend of ``(key, label)`` and the
    highlighted columns marked under the axis. Column labels wider than their column are slanted."""
    out = _open(width, height + 24, title)
    top, steps = scale(max((sum(v for _, v in c.values) for c in columns), default=0))
    _y_axis(out, 0, top, steps, width, height)
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(columns), 1)
    for i, c in enumerate(columns):
        x, y = PAD_LEFT + i * slot + slot * 0.15, float(height - PAD_BOTTOM)
        if c.highlight:
            out.append(
                f'<rect class="highlight" x="{PAD_LEFT + i * slot:.1f}" y="{PAD_TOP}" width="{slot:.1f}" '
                f'height="{plot_h}"/>'
            )
        for key, value in c.values:
            h = plot_h * value / top
            y -= h
            if value:
                out.append(
                    f'<rect class="bar series-{esc(key)}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                    f'height="{h:.1f}"><title>{esc(f"{c.label} {key}: {_number(value)}")}</title></rect>'
                )
        total = sum(v for _, v in c.values)
        if total:
            out.append(
                f'<text class="label value" x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                f'font-size="{FONT - 1}">{esc(_number(total))}</text>'
            )
        cx, ly = x + slot * 0.35, height - PAD_BOTTOM + FONT + 4
        # A label wider than its column (about 0.6 em a character) is slanted.
        slant = (
            f' text-anchor="end" transform="rotate(-35 {cx:.1f} {ly})"'
            if len(c.label) * (FONT - 1) * 0.6 > slot
            else ' text-anchor="middle"'
        )
        out.append(
            f'<text class="label{" strong" if c.highlight else ""}" x="{cx:.1f}" y="{ly}"{slant} '
            f'font-size="{FONT - 1}">{esc(c.label)}</text>'
        )
    out.append(_baseline(width, height))
    _legend(out, legend, height + 16)
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Point:
    """One version on the timeline: its label under the axis, its value (None: no value), a tooltip."""

    label: str
    value: float | None
    note: str = ""
    tip: str = ""


def timeline(points: Sequence[Point], *, title: str, width: int = 640, height: int = 200) -> str:
    """Values by version, left to right, joined by steps (a value holds until the next version); each point
    labelled with its value, and its ``note`` under the axis. A point without a value sits on the axis,
    hollow."""
    out = _open(width, height, title)
    values = [p.value for p in points if p.value is not None]
    low = min(0.0, *values) if values else 0.0
    span, steps = scale(max(values, default=0) - low)
    _y_axis(out, low, low + span, steps, width, height)
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(points), 1)
    xy = []
    for i, p in enumerate(points):
        x = PAD_LEFT + slot * (i + 0.5)
        y = height - PAD_BOTTOM - plot_h * (((p.value if p.value is not None else low) - low) / span)
        xy.append((x, y))
    if len(xy) > 1:
        path = [f"M{xy[0][0]:.1f},{xy[0][1]:.1f}"] + [f"H{x:.1f}V{y:.1f}" for x, y in xy[1:]]
        out.append(f'<path class="line" d="{"".join(path)}"/>')
    for (x, y), p in zip(xy, points, strict=True):
        hollow = " hollow" if p.value is None else ""
        text = "none" if p.value is None else _number(p.value)
        out.append(
            f'<circle class="point{hollow}" cx="{x:.1f}" cy="{y:.1f}" r="5">'
            f"<title>{esc(p.tip or f'{p.label}: {text}')}</title></circle>"
        )
        out.append(
            f'<text class="label value" x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle" '
            f'font-size="{FONT}">{esc(text)}</text>'
        )
        out.append(
            f'<text class="label strong" x="{x:.1f}" y="{height - PAD_BOTTOM + FONT + 4}" '
            f'text-anchor="middle" font-size="{FONT}">{esc(p.label)}</text>'
        )
        if p.note:
            out.append(
                f'<text class="label" x="{x:.1f}" y="{height - PAD_BOTTOM + 2 * FONT + 6}" '
                f'text-anchor="middle" font-size="{FONT - 2}">{esc(p.note)}</text>'
            )
    out.append(_baseline(width, height))
    out.append("</svg>")
    return "\n".join(out)


def _baseline(width: int, height: int) -> str:
    y = height - PAD_BOTTOM
    return f'<line class="axis" x1="{PAD_LEFT}" y1="{y}" x2="{width - PAD_RIGHT}" y2="{y}"/>'


def _legend(out: list[str], legend: Sequence[tuple[str, str]], y: float) -> None:
    x = float(PAD_LEFT)
    for key, label in legend:
        out.append(f'<rect class="bar series-{esc(key)}" x="{x:.1f}" y="{y - 10}" width="12" height="12"/>')
        out.append(f'<text class="label" x="{x + 16:.1f}" y="{y}" font-size="{FONT}">{esc(label)}</text>')
        x += 16 + 8 * len(label) + 20
