"""Time, in one place, so the store and the scheduler can be driven by a test clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC; aware ones are converted."""
    tz = value.tzinfo
    if tz is UTC:  # what PostgreSQL connections set to UTC return: nothing to do
        return value
    return value.replace(tzinfo=UTC) if tz is None else value.astimezone(UTC)
