"""One duration syntax for every option that takes time: ``90``, ``1.5``, ``30s``, ``5m``, ``12h``, ``7d``, ``2w``.

A plain number is seconds, so scripts written against the seconds-only
options keep working. Each parser is an argparse ``type``: argparse puts the
option's name in front of the message, so the user reads which flag was wrong.
"""

from __future__ import annotations

import argparse
import math
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXAMPLE = "a duration like 90, 30s, 5m, 12h or 7d"
#: Longer than any job waits or is kept; and far from where dates and timedeltas overflow.
MAX_SECONDS = 100 * 365 * 86400


def parse_seconds(raw: str) -> float:
    """Seconds in ``raw``; ``ValueError`` with a message meant for people otherwise."""
    text = raw.strip().lower()
    unit = UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"expected {EXAMPLE}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected {EXAMPLE}, got {raw!r}")
    if abs(value) > MAX_SECONDS:
        raise ValueError(f"at most 100 years (36500d), got {raw!r}")
    return value


def _argparse(raw: str, *, positive: bool) -> float:
    try:
        value = parse_seconds(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative, got {raw!r}")
    if positive and value == 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds or a duration (30s, 5m), got {raw!r}")
    return value


def seconds(raw: str) -> float:
    """Zero or more seconds (``--shutdown-grace 0`` means: do not wait)."""
    return _argparse(raw, positive=False)


def positive_seconds(raw: str) -> float:
    return _argparse(raw, positive=True)


def duration(raw: str) -> timedelta:
    """A non-negative ``timedelta`` (``--older-than 7d``)."""
    return timedelta(seconds=_argparse(raw, positive=False))
