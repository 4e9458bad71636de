"""The database's clock, as every time-critical decision must see it.

Leases, ``run_at``, rescue and cron fire times compare instants written by
different hosts. Decided with each host's own clock, a worker whose clock runs
60 s ahead rescues jobs whose workers are alive (and runs them twice) and
starts delayed jobs early; a scheduler ahead fires crons early. So the store
tells time by the database server's clock: ``DatabaseClock`` is the local
clock plus the offset to the server's, measured on first use and again every
``RESYNC_SECONDS`` (one ``SELECT clock_timestamp()``, its round trip halved),
so the hot paths keep binding plain parameters and pay no extra query.

The error is half a round trip (well under a millisecond on a LAN), plus
whatever a host's clock is stepped by between two measurements. A backend
without a server of its own (SQLite: the file is on this host) has no offset.
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
                with self._db.engine.connect() as conn:
                    before = utcnow()
                    server = self._db.driver.server_now(conn)
                    after = utcnow()
            except Exception as exc:
                logger.debug("could not read the database clock (%s); keeping the last offset", exc)
                self._measured_at = time.monotonic() - RESYNC_SECONDS + 1.0  # try again in a second
                return
            if server is None:
                self._offset = timedelta(0)
            else:
                self._offset = server - (before + (after - before) / 2)
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
