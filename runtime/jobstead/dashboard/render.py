"""The Jinja environment: templates shipped in the package, autoescaped, and the filters they use."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from markupsafe import Markup

from ..clock import utcnow


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
    env.globals["bars"] = bars
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


def bars(series: list[tuple[int, int]], width: int = 600, height: int = 80) -> Markup:
    """Succeeded (green) stacked under failed (red) per minute, as inline SVG: no script, no library."""
    top = max((ok + bad for ok, bad in series), default=0) or 1
    step = width / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="jobs finished per minute over the last hour">'
    ]
    for i, (ok, bad) in enumerate(series):
        x = i * step
        ok_h = height * ok / top
        bad_h = height * bad / top
        if ok:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{height - ok_h:.1f}" width="{step * 0.8:.1f}" height="{ok_h:.1f}">'
                f"<title>{ok} succeeded</title></rect>"
            )
        if bad:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{height - ok_h - bad_h:.1f}" width="{step * 0.8:.1f}" '
                f'height="{bad_h:.1f}"><title>{bad} failed</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # numbers only, built above
