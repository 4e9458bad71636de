"""Keeping the planner's statistics of the jobs table up with its growth: once per interval per database.

A prepared statement keeps the plan it was first given; a worker that
started on an empty table scans all of it on every claim and completion
until new statistics invalidate that plan (see
``Driver.refresh_planner_statistics``). The check is one catalog read; the
ANALYZE it may run happens about once per doubling of the table.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from ..store import Store
from .base import Service

logger = logging.getLogger("jobstead.services")

#: Often enough that a table filling from empty is re-planned within seconds.
PLANNER_STATISTICS_EVERY = 2.0


class PlannerStatistics(Service):
    name = "planner statistics"

    def __init__(self, store: Store, worker_id: str, *, every: float = PLANNER_STATISTICS_EVERY) -> None:
        super().__init__(every)
        self._store = store
        self._worker_id = worker_id

    def run_once(self) -> None:
        if not self._store.turns.take(self.name, timedelta(seconds=self.every), by=self._worker_id):
            return
        if self._store.refresh_planner_statistics():
            logger.debug("planner statistics: the jobs table had outgrown them; gathered again")
