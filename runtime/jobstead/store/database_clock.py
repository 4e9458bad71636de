"""The database's clock, as every time-critical decision must see it.

Leases, ``run_at``, rescue and cron fire times compare instants written by
different hosts. Decided with each host's own clock, a worker whose clock runs
60 s ahead rescues jobs whose workers are alive (and runs them twice) and
starts delayed jobs early; a scheduler ahead fires crons early. So the store
tells time by the database server's clock: ``DatabaseClock`` is the local
clock plus the offset to the server's, measured on first use and again every
``RESYNC_SECONDS`` (a few ``SELECT clock_timestamp()`` on one connection), so
the hot paths keep binding plain parameters and pay no extra query.

One reading only bounds the offset: the server read its clock somewhere
between our two readings, so the offset lies in an interval as wide as the
round trip. Its midpoint is wrong by up to half of it, and on a busy host a
round trip is lopsided by tens of milliseconds (the reply waits for the GIL, or
the backend for a core): a worker on the database's own host, whose clock is
the server's, wrote every time off by that much. So each measurement takes a
few readings, keeps what they all allow, and moves this host's clock no
further than they require: not at all when it agrees with the server's within
what can be measured. The error is then at most the shortest round trip
(well under a millisecond on a LAN), plus whatever a host's clock is stepped
by between two measurements. A backend without a server of its own (SQLite:
the file is on this host) has no offset.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from ..clock import utcnow
from .database import Database

logger = logging.getLogger("jobstead.store")

#: How often the offset to the server's clock is measured again.
RESYNC_SECONDS = 10.0
#: Readings per measurement: the offsets they allow are intersected.
READINGS = 3
#: An offset larger than this is logged once: it means a host clock is wrong.
SKEW_WORTH_SAYING = timedelta(seconds=2)


class DatabaseClock:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._offset = timedelta(0)
        self._measured_at: float | None = None
        self._lock = threading.Lock()
        self._reported = False

    @property
    def offset(self) -> timedelta:
        """The server's clock minus this host's, as last measured."""
        return self._offset

    def __call__(self) -> datetime:
        measured_at = self._measured_at
        if measured_at is None or time.monotonic() - measured_at >= RESYNC_SECONDS:
            self.resync()
        return utcnow() + self._offset

    def resync(self) -> None:
        """Measure the offset now; on failure keep the last one (the caller's own query will fail loudly)."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is measuring; its result will do
        try:
            try:
                allowed = self._read_offsets()
            except Exception as exc:
                logger.debug("could not read the database clock (%s); keeping the last offset", exc)
                self._measured_at = time.monotonic() - RESYNC_SECONDS + 1.0  # try again in a second
                return
            self._offset = timedelta(0) if allowed is None else nearest_to_zero(allowed)
            self._measured_at = time.monotonic()
            if abs(self._offset) > SKEW_WORTH_SAYING and not self._reported:
                self._reported = True
                logger.warning(
                    "this host's clock is %.1f s %s the database's; Jobstead goes by the database's",
                    abs(self._offset.total_seconds()),
                    "behind" if self._offset > timedelta(0) else "ahead of",
                )
        finally:
            self._lock.release()

    def _read_offsets(self) -> tuple[timedelta, timedelta] | None:
        """The offsets (lowest, highest) every reading allows; None when the server has no clock of its own."""
        allowed: tuple[timedelta, timedelta] | None = None
        with self._db.engine.connect() as conn:
            for _ in range(READINGS):
                before = utcnow()
                server = self._db.driver.server_now(conn)
                after = utcnow()
                if server is None:
                    return None
                reading = (server - after, server - before)
                if allowed is None:
                    allowed = reading
                else:
                    narrowed = (max(allowed[0], reading[0]), min(allowed[1], reading[1]))
                    # Disjoint only if a clock was stepped between two readings: the latest one holds.
                    allowed = narrowed if narrowed[0] <= narrowed[1] else reading
        return allowed


def nearest_to_zero(allowed: tuple[timedelta, timedelta]) -> timedelta:
    """The offset within ``allowed`` that moves this host's clock least: zero when it is allowed."""
    low, high = allowed
    return min(max(timedelta(0), low), high)
