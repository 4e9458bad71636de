"""Charts drawn on the server as inline SVG: axes, scales and times as text, no script, no library.

A chart is read by people and by screen readers: every number a bar or a
line shows is also in the SVG as text (the axis labels) or in a ``<title>``,
and the page carries the same figures in a table. The y-axis runs from zero
to a round number above the largest value, with headroom, so a steady load
reads as "about 100 a minute" on a labelled scale instead of filling the
chart as a flat wall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

#: The drawing's own coordinates; CSS scales the whole picture, text included.
WIDTH = 720
HEIGHT = 190
LEFT = 60
RIGHT = 12
TOP = 18
BOTTOM = 26
#: A tick on the time axis every this many minutes.
TIME_TICK = 10


@dataclass(frozen=True)
class Scale:
    """Zero to ``top`` in ``step``s: the y-axis of a chart."""

    top: int
    step: int

    @property
    def ticks(self) -> list[int]:
        return list(range(0, self.top + 1, self.step))


def nice_scale(largest: float, *, ticks: int = 4, headroom: float = 1.2) -> Scale:
    """A round top (1, 2 or 5 times a power of ten, times the tick count) above ``largest`` with headroom.

    ``nice_scale(100)`` is 0-150 by 50: a steady hundred a minute fills two
    thirds of the chart, not all of it.
    """
    if largest * headroom <= ticks:  # a quiet hour: 0-4 by one, not a scale of fractions
        return Scale(top=ticks, step=1)
    wanted = largest * headroom / ticks
    power = 10 ** math.floor(math.log10(wanted))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= wanted)
    step = max(1, int(step))
    return Scale(top=step * math.ceil(largest * headroom / step), step=step)


def minute_label(start: datetime, index: int) -> str:
    return (start + timedelta(minutes=index)).strftime("%H:%M")


def _frame(scale: Scale, start: datetime, minutes: int, label: str) -> list[str]:
    """The axes: gridlines with their values on the left, clock times along the bottom."""
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
    ]
    for value in scale.ticks:
        y = TOP + plot_h - plot_h * value / scale.top
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,}</text>')
    # Ticks at round clock times (every TIME_TICK minutes), and "now" at the right edge.
    marks = [i for i in range(minutes - 5) if (start + timedelta(minutes=i)).minute % TIME_TICK == 0]
    for index in [*marks, minutes]:
        x = LEFT + plot_w * index / minutes
        anchor = "end" if index == minutes else "middle"
        text = "now" if index == minutes else minute_label(start, index)
        parts.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{text}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    return parts


def finished_chart(series: Sequence[tuple[int, int]], start: datetime) -> Markup:
    """Succeeded (green) under failed or dead (red), one bar per minute, on a labelled scale."""
    minutes = max(len(series), 1)
    scale = nice_scale(max((ok + bad for ok, bad in series), default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / minutes
    parts = _frame(scale, start, minutes, "jobs finished per minute over the last hour")
    for i, (ok, bad) in enumerate(series):
        x = LEFT + i * step + step * 0.1
        ok_h = plot_h * ok / scale.top
        bad_h = plot_h * bad / scale.top
        when = minute_label(start, i)
        if ok:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{TOP + plot_h - ok_h:.1f}" width="{step * 0.8:.1f}" '
                f'height="{ok_h:.1f}"><title>{when}: {ok:,} succeeded</title></rect>'
            )
        if bad:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{TOP + plot_h - ok_h - bad_h:.1f}" width="{step * 0.8:.1f}" '
                f'height="{bad_h:.1f}"><title>{when}: {bad:,} failed or dead</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # numbers and escaped text only, built above


def depth_chart(series: Sequence[int], start: datetime) -> Markup:
    """Jobs waiting at the end of each minute, as a line over a shaded area, on a labelled scale."""
    minutes = max(len(series), 1)
    scale = nice_scale(max(series, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    parts = _frame(scale, start, minutes, "jobs waiting in a queue, minute by minute over the last hour")
    points = [(LEFT + plot_w * (i + 1) / minutes, TOP + plot_h - plot_h * n / scale.top) for i, n in enumerate(series)]
    if points:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        base = TOP + plot_h
        parts.append(f'<polygon class="area" points="{points[0][0]:.1f},{base} {line} {points[-1][0]:.1f},{base}"/>')
        parts.append(f'<polyline class="line" points="{line}"/>')
        for i, ((x, y), n) in enumerate(zip(points, series, strict=True)):
            parts.append(
                f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{minute_label(start, i + 1)}: '
                f"{n:,} waiting</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(series: Sequence[tuple[int, int]], width: int = 120, height: int = 28) -> Markup:
    """A handler's last hour in a table cell: scaled to its own largest minute, which the label says."""
    top = max((ok + bad for ok, bad in series), default=0)
    total_ok = sum(ok for ok, _ in series)
    total_bad = sum(bad for _, bad in series)
    label = f"last hour: {total_ok:,} succeeded, {total_bad:,} failed; busiest minute {top:,}"
    step = width / max(len(series), 1)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{label}"><title>{label}</title>'
    ]
    for i, (ok, bad) in enumerate(series):
        x = i * step
        ok_h = height * ok / (top or 1)
        bad_h = height * bad / (top or 1)
        if ok:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{height - ok_h:.1f}" width="{step * 0.8:.1f}" height="{ok_h:.1f}"/>'
            )
        if bad:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{height - ok_h - bad_h:.1f}" width="{step * 0.8:.1f}" '
                f'height="{bad_h:.1f}"/>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
