"""The Jinja environment: templates shipped in the package, autoescaped, and the filters they use."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from ..clock import utcnow
from . import charts, tracebacks


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("jobstead.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = age
    env.filters["when"] = when
    env.filters["pretty"] = pretty
    env.filters["number"] = number
    env.filters["ago"] = ago
    env.filters["duration"] = duration
    env.filters["in_zone"] = in_zone
    env.globals["finished_chart"] = charts.finished_chart
    env.globals["depth_chart"] = charts.depth_chart
    env.globals["sparkline"] = charts.sparkline
    env.globals["minute_label"] = charts.minute_label
    env.globals["trim"] = tracebacks.trim
    return env


def age(value: datetime | None, now: datetime | None = None) -> str:
    """``4 s``, ``3 min``, ``2 h``, ``5 d``: how long ago (or ``in ...`` for the future)."""
    if value is None:
        return "-"
    seconds = ((now or utcnow()) - value).total_seconds()
    prefix, seconds = ("in ", -seconds) if seconds < 0 else ("", seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{prefix}{int(seconds // size)} {unit}"
    return f"{prefix}{int(seconds)} s"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def number(value: int) -> str:
    return f"{value:,}"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``27 min ago`` (or ``in 3 h`` for the future): ``age`` said as a sentence says it."""
    if value is None:
        return "-"
    text = age(value, now)
    return text if text.startswith("in ") else f"{text} ago"


def in_zone(value: datetime, zone: str) -> str:
    """``2026-12-07 03:00:00 Europe/Tallinn``: a cron's fire time on its own zone's clock."""
    try:
        local = value.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return when(value)
    return f"{local.strftime('%Y-%m-%d %H:%M:%S')} {zone}"


def duration(seconds: float | None) -> str:
    """``120 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``: how long something took."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
