"""Giving the jobs of dead workers back to the queue: once per interval per database."""

from __future__ import annotations

import logging
from datetime import timedelta

from ..metrics.worker import WORKER_METRICS
from ..store import Store
from .base import Service

logger = logging.getLogger("jobstead.services")


class Rescuer(Service):
    """Rescues jobs whose lease expired (their worker crashed or stalled).

    Every worker runs one, but each round is done by whichever takes the
    database's turn (``store.turns``): one scan per interval per database, not
    one per worker per heartbeat. A rescue is counted by the process doing it.
    """

    name = "rescue"

    def __init__(self, store: Store, worker_id: str, *, every: float) -> None:
        super().__init__(every)
        self._store = store
        self._worker_id = worker_id
        self.rescued = 0

    def run_once(self) -> None:
        if not self._store.turns.take(self.name, timedelta(seconds=self.every), by=self._worker_id):
            return
        rescued = self._store.leases.rescue_expired()
        if rescued:
            self.rescued += len(rescued)
            WORKER_METRICS.rescued.inc(len(rescued))  # counted by the process that rescued them
            logger.warning("rescued %d job(s) whose worker stopped renewing its lease: %s", len(rescued), rescued)
