"""Cron expressions in words, for the crons page: ``*/20`` seconds reads "every 20 seconds".

Only the common shapes are put into words; anything else is shown as the
expression itself, which is never wrong. The syntax is ``jobstead.cron``'s:
five fields, or six with the seconds LAST, or a preset.
"""

from __future__ import annotations

import re

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAY_NAMES = {name[:3].lower(): i for i, name in enumerate(DAYS)}
PRESETS = {
    "@hourly": "every hour, on the hour",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@monthly": "on the 1st of every month at 00:00",
    "@yearly": "every year on 1 January at 00:00",
    "@annually": "every year on 1 January at 00:00",
}
_NUMBER = re.compile(r"\d{1,2}")
_EVERY = re.compile(r"\*/(\d{1,2})")


def _plural(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _day(token: str) -> int | None:
    if _NUMBER.fullmatch(token):
        value = int(token)
        return value % 7 if value <= 7 else None
    return _DAY_NAMES.get(token.lower())


def _weekdays(field: str) -> str | None:
    """``1-5`` -> "Monday to Friday", ``1,3`` -> "Monday and Wednesday"; None for other shapes."""
    if "-" in field and "," not in field:
        first, _, last = field.partition("-")
        a, b = _day(first), _day(last)
        return f"{DAYS[a]} to {DAYS[b]}" if a is not None and b is not None else None
    days = [_day(t) for t in field.split(",")]
    if any(d is None for d in days):
        return None
    return _and([DAYS[d] for d in days if d is not None])


def _time(minute: str, hour: str) -> str | None:
    if _NUMBER.fullmatch(minute) and _NUMBER.fullmatch(hour) and int(minute) < 60 and int(hour) < 24:
        return f"{int(hour):02d}:{int(minute):02d}"
    return None


def _five(minute: str, hour: str, dom: str, month: str, dow: str) -> str | None:
    if month != "*":
        return None
    if (hour, dom, dow) == ("*", "*", "*"):
        if minute == "*":
            return "every minute"
        if every := _EVERY.fullmatch(minute):
            return _plural(int(every.group(1)), "minute")
        if _NUMBER.fullmatch(minute):
            return f"every hour at minute {int(minute)}"
        return None
    if (dom, dow) == ("*", "*") and (every := _EVERY.fullmatch(hour)) and _NUMBER.fullmatch(minute):
        return f"{_plural(int(every.group(1)), 'hour')} at minute {int(minute)}"
    at = _time(minute, hour)
    if at is None:
        return None
    if (dom, dow) == ("*", "*"):
        return f"every day at {at}"
    if dom == "*":
        days = _weekdays(dow)
        return f"every {days} at {at}" if days else None
    if dow == "*" and _NUMBER.fullmatch(dom) and 1 <= int(dom) <= 31:
        return f"on the {_ordinal(int(dom))} of every month at {at}"
    return None


def describe(expression: str) -> str:
    """The schedule in words when its shape is a common one, else the expression unchanged."""
    text = " ".join(expression.split())
    if text.lower() in PRESETS:
        return PRESETS[text.lower()]
    fields = text.split(" ")
    if len(fields) == 6:
        second = fields[5]
        if fields[:5] == ["*"] * 5:
            if second == "*":
                return "every second"
            if every := _EVERY.fullmatch(second):
                return _plural(int(every.group(1)), "second")
            if _NUMBER.fullmatch(second):
                return f"every minute at second {int(second)}"
            return text
        if second != "0":
            return text
        fields = fields[:5]
    if len(fields) != 5:
        return text
    return _five(*fields) or text
