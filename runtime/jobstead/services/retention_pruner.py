"""Deleting old finished jobs (retention), and flow control's rows of idle keys: once per interval per database."""

from __future__ import annotations

import logging
from datetime import timedelta

from ..store import Store
from .base import Service

logger = logging.getLogger("jobstead.services")

#: Retention has no hurry: every five minutes is plenty, and spares a busy table.
RETENTION_EVERY = 300.0


class RetentionPruner(Service):
    name = "retention"

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        finished: timedelta | None,
        dead: timedelta | None,
        every: float = RETENTION_EVERY,
    ) -> None:
        super().__init__(every)
        self._store = store
        self._worker_id = worker_id
        self._finished = finished
        self._dead = dead

    def run_once(self) -> None:
        if not self._store.turns.take(self.name, timedelta(seconds=self.every), by=self._worker_id):
            return
        flow = self._store.retention.prune_flow()
        if flow.rate_rows or flow.fair_turns:
            logger.info(
                "retention: forgot %d rate row(s) and %d fair turn(s) of idle keys", flow.rate_rows, flow.fair_turns
            )
        if self._finished is None and self._dead is None:
            return
        deleted = self._store.retention.prune(finished=self._finished, dead=self._dead)
        if deleted:
            logger.info("retention: deleted %d finished job(s)", deleted)
