"""A connection pool that waits for a connection when the server has no more to give.

SQLAlchemy's ``QueuePool`` opens a new connection whenever every connection
it has is in use. When the server refuses it (``max_connections`` taken by
other processes: "sorry, too many clients already"), the operation fails,
although the process already holds connections that will be free in a few
milliseconds. With many workers on one server (20 workers, 50 connections)
that failed lease renewals and completion writes over and over, and jobs were
rerun or stuck. This pool waits for one of its own connections instead, as it
does once it is full, and says so once a minute, in one line.

It only waits while another thread of this process holds a connection it will
give back, and never when the asking thread holds one itself (that thread
would wait for itself).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

logger = logging.getLogger("jobstead.store")
# SQLAlchemy logs each pool's doings under the pool class's own name, which for this class is
# inside "jobstead": at INFO, a failover or an outage printed a line per pooled connection
# ("Invalidate connection", "recycling"). What matters is said once, by the store, at WARNING.
logging.getLogger(f"{__name__}.WaitingQueuePool").setLevel(logging.WARNING)

#: What PostgreSQL says when it has no connection slot left for this role.
REFUSED = ("too many clients", "remaining connection slots are reserved", "too many connections for role")
#: At most one "waiting for a connection" line per this many seconds per pool.
SAY_EVERY_SECONDS = 60.0


class WaitingQueuePool(QueuePool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()
        self._said_at = float("-inf")

    def _holding(self) -> int:
        return int(getattr(self._held, "n", 0))

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            entry = super()._do_get()
        except Exception as exc:
            if self.checkedout() <= self._holding() or not any(text in str(exc) for text in REFUSED):
                raise
            entry = self._wait_for_own(exc)
        self._held.n = self._holding() + 1
        return entry

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        self._held.n = max(0, self._holding() - 1)
        super()._do_return_conn(record)

    def _wait_for_own(self, refused: Exception) -> ConnectionPoolEntry:
        now = time.monotonic()
        if now - self._said_at >= SAY_EVERY_SECONDS:
            self._said_at = now
            logger.warning(
                "the database refused another connection (%s); waiting for one of this process's %d",
                " ".join(str(refused).split()),
                self.checkedout(),
            )
        try:
            entry: ConnectionPoolEntry = self._pool.get(True, self._timeout)
        except Exception:  # sqlalchemy's queue.Empty: none came back in time
            raise refused from None
        return entry
