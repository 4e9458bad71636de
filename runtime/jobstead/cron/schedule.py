"""Cron schedules: parsing, validation, and fire times in an IANA time zone.

Pure: no database, no clock. The scheduler, the CLI, the store (for "next fire
time") and the operator (to refuse a bad ``CronSchedule``) all use this one
module, so they agree on what a schedule means.

Syntax
------
* 5 fields, ``minute hour day-of-month month day-of-week``, as in crontab(5);
* or 6 fields: the same five plus a seconds field LAST (``*/15 * * * * 30`` is
  second 30 of every quarter hour). That is croniter's convention, which keeps
  the five classic fields where crontab has them;
* or a preset: ``@hourly @daily @midnight @weekly @monthly @yearly @annually``.

Hashed and random fields (``H``, ``R``) are refused: every scheduler replica
must compute the same fire times, and ``R`` differs per process.

Daylight saving time (decided; ``tests/unit/test_cron_schedule.py`` pins it)
---------------------------------------------------------------------------
A schedule names wall-clock times in its zone. croniter enumerates those
wall-clock times *naively* (as if the zone had no DST), and this module maps
each one to exactly one instant:

* a wall-clock time that happens once is that instant;
* an AMBIGUOUS time (the hour repeated when clocks fall back) is its FIRST
  occurrence, still on summer time. The second pass of the repeated hour fires
  nothing: ``30 1 * * *`` in America/New_York runs once on the fall-back night,
  and ``*/15 * * * *`` runs at 01:00-01:45 EDT, then next at 02:00 EST;
* a time that does NOT EXIST (skipped when clocks spring forward) happens at
  the first instant after the gap, the moment the clock jumps. Several such
  times collapse into that one instant, together with a regular fire time that
  falls on it: ``30 2 * * *`` in New York runs at 03:00 EDT on spring-forward
  day, and ``0 2,3 * * *`` runs once, at 03:00.

So a fire time never runs twice and is never dropped, beyond the repeated
hour's second pass. Schedules that must tick at fixed real-time intervals
should use ``UTC``.

Why not croniter's own time-zone support: it resolves an ambiguous time
relative to where the search starts, so two schedulers searching from
different instants could disagree on whether 01:15 EST is a fire time (and
``*/15`` fires the repeated hour twice). Exactly-once needs every scheduler to
derive the same set of instants; the mapping above depends on the wall-clock
time alone, so it does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from ..errors import ConfigurationError

PRESETS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
#: ``H`` / ``R`` as a field or list item (not the h/r inside month or day names).
_HASHED_OR_RANDOM = re.compile(r"(?<![a-z])[hr](?![a-z])")
#: Bounds the skipping of fire times inside a repeated hour (3600 for a per-second schedule).
_MAX_SKIPPED = 100_000


class InvalidSchedule(ConfigurationError):
    """A cron expression or time zone that cannot be used; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in a time zone; build with ``CronSchedule.parse``."""

    expression: str
    timezone: str
    zone: ZoneInfo = field(compare=False, repr=False)

    @staticmethod
    def parse(expression: str, timezone: str = "UTC") -> CronSchedule:
        """Validate and return the schedule, or raise ``InvalidSchedule`` with a clear message."""
        if not isinstance(expression, str):
            kind = type(expression).__name__
            raise InvalidSchedule(f"a cron schedule is a string such as '*/15 * * * *', not {kind}")
        if not isinstance(timezone, str):
            raise InvalidSchedule(f"a time zone is a string such as 'Europe/Tallinn', not {type(timezone).__name__}")
        return _parse(expression, timezone)

    @property
    def has_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    def seconds_field_advice(self) -> str | None:
        """What to say of a six-field schedule that fires every second of some minutes only.

        ``*/15 * * * * *`` reads "every 15 s" in Quartz, "every second of every
        15th minute" here. Nothing is refused (every second may be meant), but
        the mistake is common enough to say, with the fix. Parsing stays
        silent: the schedule is parsed by every command that lists or fires
        crons, and only the one that defines such a cron (``@app.cron``,
        ``jobstead crons add``) says it, once.
        """
        fields = self.expression.split(" ")
        every_second = ("*", "*/1")
        if len(fields) != 6 or fields[5] not in every_second or fields[0] in every_second:
            return None
        meant = " ".join(["*", *fields[1:5], fields[0]])
        return (
            f"cron schedule {self.expression!r} fires every second of each matching minute: the seconds field goes "
            f"LAST here (minute hour day month weekday second); for seconds first, as in Quartz, write {meant!r}"
        )

    # -- fire times ------------------------------------------------------------

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant`` (an aware datetime), in UTC."""
        return next(self._ascending(instant))

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last fire time at or before ``instant``, in UTC; None if there never was one."""
        return next(self._descending(instant), None)

    def fires_after(self, instant: datetime, *, until: datetime | None = None) -> Iterator[datetime]:
        """Fire times strictly after ``instant`` (and at or before ``until``), ascending, in UTC."""
        for fire in self._ascending(instant):
            if until is not None and fire > until:
                return
            yield fire

    def count_between(self, after: datetime, until: datetime, *, limit: int = 1000) -> int:
        """How many fire times lie in ``(after, until]``, counting at most ``limit``."""
        return sum(1 for _ in islice(self.fires_after(after, until=until), limit))

    # -- wall clock <-> instants ---------------------------------------------

    def _local(self, instant: datetime) -> datetime:
        if instant.tzinfo is None:
            raise ValueError("cron fire times are computed from aware datetimes")
        return instant.astimezone(self.zone)

    def _ascending(self, instant: datetime) -> Iterator[datetime]:
        """Distinct fire instants > ``instant``, in order.

        Walks wall-clock matches from the wall-clock reading of ``instant``.
        Inside a repeated hour's second pass, the first matches map to
        first-pass instants that are already behind ``instant``: skipped.
        """
        last = instant.astimezone(UTC)
        start = self._local(instant).replace(tzinfo=None, fold=0)
        skipped = 0
        for local in self._wall_clock(start, backwards=False):
            fire = self._instant(local)
            if fire > last:
                skipped = 0
                last = fire
                yield fire
            else:
                skipped += 1
                if skipped > _MAX_SKIPPED:
                    raise RuntimeError(f"cron {self.expression!r}: no fire time found after {instant}")

    def _descending(self, instant: datetime) -> Iterator[datetime]:
        """Distinct fire instants <= ``instant``, newest first.

        In a repeated hour's second pass the wall clock reads earlier than the
        first-pass fire times already behind us, so the walk starts from the
        reading on the first pass's (larger) offset instead.
        """
        local = self._local(instant)
        first_pass, offset = local.replace(fold=0).utcoffset(), local.utcoffset()
        shift = timedelta(0)
        if first_pass is not None and offset is not None:
            shift = max(first_pass - offset, shift)
        start = local.replace(tzinfo=None, fold=0) + shift
        last = instant.astimezone(UTC) + timedelta(microseconds=1)
        skipped = 0
        try:
            for wall in self._wall_clock(start, backwards=True):
                fire = self._instant(wall)
                if fire < last:
                    skipped = 0
                    last = fire
                    yield fire
                else:
                    skipped += 1
                    if skipped > _MAX_SKIPPED:
                        raise RuntimeError(f"cron {self.expression!r}: no fire time found before {instant}")
        except CroniterBadDateError:  # nothing earlier within croniter's search range
            return

    def _wall_clock(self, start: datetime, *, backwards: bool) -> Iterator[datetime]:
        """Naive wall-clock matches after ``start`` (or at/before it, going backwards)."""
        if backwards:
            it = croniter(self.expression, start + timedelta(microseconds=1), ret_type=datetime)
            while True:
                yield it.get_prev()
        it = croniter(self.expression, start, ret_type=datetime)
        while True:
            yield it.get_next()

    def _instant(self, wall: datetime) -> datetime:
        """The one instant a wall-clock time fires at (see the module docstring)."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return first  # exists; fold=0 is the first occurrence of an ambiguous time
        return self._end_of_gap(wall)

    def _end_of_gap(self, wall: datetime) -> datetime:
        """For a wall-clock time inside a spring-forward gap: the instant the clock jumps.

        The two readings of ``wall`` (before and after the transition) bracket
        that instant; a binary search over whole seconds finds the first instant
        whose wall clock reads past ``wall``.
        """
        a = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        b = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        lo, hi = min(a, b), max(a, b)  # local(lo) < wall <= ... < local(hi)
        low, high = 0, int((hi - lo).total_seconds())
        while low < high:
            mid = (low + high) // 2
            if (lo + timedelta(seconds=mid)).astimezone(self.zone).replace(tzinfo=None) > wall:
                high = mid
            else:
                low = mid + 1
        return lo + timedelta(seconds=low)


@lru_cache(maxsize=512)
def _parse(expression: str, timezone: str) -> CronSchedule:
    if not expression.strip():
        raise InvalidSchedule("empty cron schedule: give 5 fields, 6 with seconds, or a preset such as @hourly")
    normalized = " ".join(expression.split())
    lowered = normalized.lower()
    if lowered.startswith("@"):
        if lowered not in PRESETS:
            raise InvalidSchedule(f"unknown cron preset {normalized!r}: use one of {', '.join(PRESETS)}")
    else:
        fields = normalized.split(" ")
        if len(fields) not in (5, 6):
            raise InvalidSchedule(
                f"invalid cron schedule {normalized!r}: expected 5 fields "
                f"(minute hour day-of-month month day-of-week) or 6 with seconds last, got {len(fields)}"
            )
        if _HASHED_OR_RANDOM.search(lowered):
            raise InvalidSchedule(
                f"invalid cron schedule {normalized!r}: hashed (H) and random (R) fields are not supported, "
                "every scheduler must compute the same fire times"
            )
        try:
            croniter.expand(normalized, strict=True)
        except (CroniterError, ValueError, TypeError) as exc:
            raise InvalidSchedule(f"invalid cron schedule {normalized!r}: {_reason(exc)}") from None
    zone = _zone(timezone)
    schedule = CronSchedule(normalized, timezone, zone)
    try:
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterBadDateError:
        raise InvalidSchedule(f"cron schedule {normalized!r} never fires") from None
    return schedule


class SecondsFieldWarning(UserWarning):
    """A six-field schedule that fires every second of some minutes only: Quartz order (seconds first) by mistake.

    Warned by ``@app.cron`` when the cron is defined; ``CronSchedule.seconds_field_advice`` says why.
    """


def _zone(name: str) -> ZoneInfo:
    if not name:
        raise InvalidSchedule("empty time zone: use an IANA name such as Europe/Tallinn, or UTC")
    if name == "localtime":  # whatever the machine is set to: schedulers on two hosts would disagree
        raise InvalidSchedule("time zone 'localtime' depends on the machine: use an IANA name such as Europe/Tallinn")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Tallinn, America/New_York or UTC"
        ) from None


def _reason(exc: BaseException) -> str:
    """croniter's message, without the expression it repeats and its "is not acceptable" preamble."""
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else ""
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    text = re.sub(r"^is not acceptable[,.]?\s*", "", text)
    return text or "not a valid expression"


__all__ = ["PRESETS", "CronSchedule", "InvalidSchedule", "SecondsFieldWarning"]
