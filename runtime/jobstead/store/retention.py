"""Retention: finished jobs are deleted after a while; failures are kept longer.

Succeeded and cancelled jobs go after ``finished``; dead and failed ones (the
dead-letter set someone may still want to inspect or retry) after ``dead``.
Deletes run in small batches, each its own transaction, so pruning a backlog
of millions never holds long locks or bloats one transaction; attempt rows go
with their job (ON DELETE CASCADE). Any number of workers may prune at once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from ..clock import Clock
from ..status import JobStatus
from .database import Database

SUCCESSES = (JobStatus.SUCCEEDED, JobStatus.CANCELLED)
FAILURES = (JobStatus.DEAD, JobStatus.FAILED)


class Retention:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def prune(self, *, finished: timedelta | None, dead: timedelta | None, batch: int = 2000) -> int:
        """Delete succeeded/cancelled jobs older than ``finished`` and dead/failed older than ``dead``.

        ``None`` keeps that kind forever. Returns how many jobs were deleted.
        """
        total = 0
        now = self._clock()
        for statuses, age in ((SUCCESSES, finished), (FAILURES, dead)):
            if age is None:
                continue
            while True:
                deleted = self._prune_batch([s.value for s in statuses], now - age, batch)
                total += deleted
                if deleted < batch:
                    break
        return total

    def _prune_batch(self, statuses: list[str], before: object, batch: int) -> int:
        jobs = self._db.tables.jobs
        oldest = (
            select(jobs.c.id)
            .where(jobs.c.status.in_(statuses), jobs.c.finished_at < before)
            .order_by(jobs.c.finished_at)
            .limit(batch)
        )
        oldest = self._db.driver.lock_for_prune(oldest)  # two pruners never wait on each other's rows
        with self._db.engine.begin() as conn:
            return int(conn.execute(delete(jobs).where(jobs.c.id.in_(oldest.scalar_subquery()))).rowcount)
