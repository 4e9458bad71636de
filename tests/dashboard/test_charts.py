"""The overview's charts: a labelled scale with headroom, clock times on the axis, numbers as text."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from jobstead.dashboard.charts import BOTTOM, HEIGHT, TOP, depth_chart, finished_chart, nice_scale, sparkline
from jobstead.dashboard.render import ago, duration

START = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("largest", "top", "step"),
    [(0, 4, 1), (1, 4, 1), (7, 10, 5), (100, 150, 50), (99, 150, 50), (1234, 1500, 500), (40_000, 60_000, 20_000)],
)
def test_the_scale_is_round_and_leaves_headroom(largest: int, top: int, step: int) -> None:
    scale = nice_scale(largest)
    assert (scale.top, scale.step) == (top, step)
    assert scale.top > largest, "the largest value never fills the chart"
    assert scale.ticks[0] == 0 and scale.ticks[-1] == scale.top


def test_a_steady_load_does_not_fill_the_chart() -> None:
    svg = str(finished_chart([(100, 0)] * 60, START))
    heights = {float(h) for h in re.findall(r'class="ok"[^>]*height="([\d.]+)"', svg)}
    assert len(heights) == 1
    plot_height = HEIGHT - TOP - BOTTOM
    assert heights.pop() < plot_height * 0.8


def test_the_axes_are_labelled_in_text() -> None:
    series = [(i, i % 3) for i in range(60)]
    svg = str(finished_chart(series, START))
    labels = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', svg)
    assert [t for t in labels if ":" in t or t == "now"] == [
        "13:00",
        "13:10",
        "13:20",
        "13:30",
        "13:40",
        "13:50",
        "now",
    ]
    assert {"0", "20", "40", "60", "80"} <= set(labels), labels
    assert "13:07: 7 succeeded" in svg and "13:07: 1 failed or dead" in svg
    depth = str(depth_chart([5] * 59 + [250], START))
    assert "14:00: 250 waiting" in depth and ">300</text>" in depth


def test_a_sparkline_says_its_totals() -> None:
    svg = str(sparkline([(2, 1)] * 60))
    assert 'aria-label="last hour: 120 succeeded, 60 failed; busiest minute 3"' in svg
    assert 'width="120"' in svg


def test_times_are_said_as_sentences() -> None:
    now = datetime(2026, 12, 6, 13, 30, tzinfo=UTC)
    assert ago(datetime(2026, 12, 6, 13, 3, tzinfo=UTC), now) == "27 min ago"
    assert ago(datetime(2026, 12, 6, 16, 30, tzinfo=UTC), now) == "in 3 h"
    assert ago(None, now) == "-"
    assert [duration(s) for s in (0.012, 4.25, 185, 7800, None)] == ["12 ms", "4.2 s", "3 min 5 s", "2 h 10 min", "-"]


def test_a_traceback_keeps_the_handlers_frames_and_folds_the_frameworks() -> None:
    from jobstead.dashboard.tracebacks import trim

    text = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/asyncio/tasks.py", line 277, in __step\n'
        "    result = coro.send(None)\n"
        '  File "/srv/venv/lib/python3.11/site-packages/jobstead/worker/execution.py", line 60, in call_handler\n'
        "    return Finished(value=await asyncio.shield(future))\n"
        "                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/srv/shop/jobs.py", line 12, in charge_card\n'
        "    raise ValueError('declined')\n"
        "ValueError: declined\n"
    )
    trimmed = trim(text)
    assert trimmed is not None
    assert trimmed.shown == (
        "Traceback (most recent call last):\n"
        '  File "/srv/shop/jobs.py", line 12, in charge_card\n'
        "    raise ValueError('declined')\n"
        "ValueError: declined"
    )
    assert trimmed.folded == 2 and trimmed.kinds == ["asyncio", "Jobstead"] and trimmed.full == text
    assert trim(None) is None and trim("") is None


def test_a_fire_time_is_shown_on_the_crons_own_clock() -> None:
    from jobstead.dashboard.render import in_zone

    at = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert in_zone(at, "Europe/Tallinn") == "2026-12-07 03:00:00 Europe/Tallinn"
    assert in_zone(at, "Nowhere/Special") == "2026-12-07 01:00:00 UTC"
