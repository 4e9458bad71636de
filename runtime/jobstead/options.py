"""Per-call job options, checked in full before anything reaches the database.

The database would take a ``1.7`` priority on SQLite and abort the caller's
transaction with a ``DataError`` on PostgreSQL; a bad option must instead fail
like a bad argument does: ``InvalidOption`` (an ``InvalidArguments``) naming
the option, at ``configure()``, with nothing written and the caller's
transaction untouched. The CLI runs the same checks, so both agree.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from .errors import InvalidOption
from .json_values import check_json

if TYPE_CHECKING:
    from .retry import RetryPolicy

SyncTransaction = Session | Connection
AsyncTransaction = AsyncSession | AsyncConnection

#: The columns are 32-bit integers on both backends.
INT32 = (-(2**31), 2**31 - 1)
#: Queue, key and tenant columns are VARCHAR(200).
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class JobOptions:
    """Per-call options; ``None`` means the handler's default."""

    session: SyncTransaction | AsyncTransaction | None = None
    run_at: datetime | None = None
    delay: timedelta | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] | None = None
    max_attempts: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        check_session(self.session)
        if self.run_at is not None and self.delay is not None:
            raise InvalidOption("run_at", "and delay cannot both be given: give run_at or delay")
        check_delay(self.delay)
        if self.run_at is not None and not isinstance(self.run_at, datetime):
            raise InvalidOption("run_at", f"must be a datetime, not {self.run_at!r}")
        if self.priority is not None:
            check_int("priority", self.priority, INT32[0])
        if self.max_attempts is not None:
            check_int("max_attempts", self.max_attempts, 1)
        if self.timeout is not None:
            check_seconds("timeout", self.timeout, positive=True)
        for name in ("queue", "key", "tenant"):
            check_name(name, getattr(self, name))
        check_metadata(self.metadata)


def check_session(session: object) -> None:
    """The caller's transaction, whose kind decides how the job is written: anything else is refused here."""
    if session is None or isinstance(session, Session | Connection | AsyncSession | AsyncConnection):
        return
    raise InvalidOption(
        "session",
        "must be a SQLAlchemy Session or Connection (or AsyncSession, AsyncConnection) whose transaction the job "
        f"joins, not {type(session).__name__}",
    )


def check_int(option: str, value: object, low: int, high: int = INT32[1]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(option, f"must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise InvalidOption(option, f"must be between {low} and {high}, not {value}")


def check_seconds(option: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(option, f"must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise InvalidOption(option, f"must be a finite number of seconds, not {value!r}")
    if positive and seconds <= 0:
        raise InvalidOption(option, f"must be a positive number of seconds, not {value!r}")
    if seconds < 0:
        raise InvalidOption(option, f"cannot be negative ({value!r})")
    return seconds


def check_delay(delay: object) -> None:
    if delay is None:
        return
    if not isinstance(delay, timedelta):
        raise InvalidOption("delay", f"must be a timedelta or a number of seconds, not {delay!r}")
    if delay < timedelta(0):
        raise InvalidOption("delay", f"cannot be negative ({delay})")


def as_delay(delay: timedelta | float | None) -> timedelta | None:
    """The short form ``delay=30`` (seconds) as a timedelta, refusing what is not a duration."""
    if delay is None or isinstance(delay, timedelta):
        return delay
    return timedelta(seconds=check_seconds("delay", delay, positive=False))


def check_name(option: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise InvalidOption(option, f"must be a non-empty string, not {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidOption(option, f"must be at most {MAX_NAME_LENGTH} characters, not {len(value)}")
    if has_control_characters(value):
        raise InvalidOption(option, f"cannot hold control characters, not {value!r}")


def has_control_characters(value: str) -> bool:
    """Whether a name holds a control character (NUL, a newline, ...).

    PostgreSQL refuses a NUL in a text column with an error that aborts the
    caller's transaction, and a newline or an escape in a name breaks every
    line a name is printed in (logs, the CLI's tables): names are refused them
    on every database.
    """
    return any(unicodedata.category(char) == "Cc" for char in value)


def check_metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidOption("metadata", f"must be a dict (a JSON object), not {type(metadata).__name__}")
    try:
        check_json(metadata, "metadata")
    except InvalidOption:
        raise
    except Exception as exc:
        raise InvalidOption("metadata", str(exc).removeprefix("metadata: ")) from None
