"""Retention: finished jobs are deleted after a while; failures are kept longer.

Succeeded and cancelled jobs go after ``finished``; dead and failed ones (the
dead-letter set someone may still want to inspect or retry) after ``dead``.

A batch's jobs (members and continuations) are never pruned one by one: its
statistics are a count of its members, which must not drift. The batch goes
as a whole, its jobs with it, once it has completed, none of its
continuations is still live, and it finished longer ago than ``finished``
(``dead`` if any member failed or died). A workflow likewise: its steps and
continuations go with it once it is final, none of its jobs is live, and it
finished longer ago than ``finished`` (``dead`` if it failed); its edges and
fired events go with its row.
Deletes run in small batches, each its own transaction, so pruning a backlog
of millions never holds long locks or bloats one transaction; attempt rows go
with their job (ON DELETE CASCADE). Any number of workers may prune at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select

from ..clock import Clock
from ..status import LIVE_STATUSES, JobStatus
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
        if finished is not None:
            total += self._prune_batches(now - finished, None if dead is None else now - dead, batch)
            total += self._prune_workflows(now - finished, None if dead is None else now - dead, batch)
        return total

    def _prune_workflows(self, finished_before: datetime, failed_before: datetime | None, batch: int) -> int:
        """Whole workflows that aged out: their jobs, then the workflow rows (edges and events go with them)."""
        t = self._db.tables
        jobs, workflows = t.jobs, t.workflows
        live = [s.value for s in (*LIVE_STATUSES, JobStatus.BLOCKED)]
        still_live = select(jobs.c.id).where(jobs.c.workflow_id == workflows.c.id, jobs.c.status.in_(live)).exists()
        failed = workflows.c.status == "failed"
        old_enough = workflows.c.finished_at < finished_before
        if failed_before is None:
            old_enough = and_(old_enough, ~failed)
        else:
            old_enough = and_(old_enough, or_(~failed, workflows.c.finished_at < failed_before))
        deleted = 0
        with self._db.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(workflows.c.id)
                    .where(
                        workflows.c.status != "active", workflows.c.finished_at.is_not(None), old_enough, ~still_live
                    )
                    .order_by(workflows.c.finished_at)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                deleted = int(conn.execute(delete(jobs).where(jobs.c.workflow_id.in_(ids))).rowcount)
                conn.execute(delete(t.workflow_edges).where(t.workflow_edges.c.workflow_id.in_(ids)))
                conn.execute(delete(t.workflow_events).where(t.workflow_events.c.workflow_id.in_(ids)))
                conn.execute(delete(workflows).where(workflows.c.id.in_(ids)))
        return deleted

    def _prune_batches(self, finished_before: datetime, failed_before: datetime | None, batch: int) -> int:
        """Whole batches that aged out: their jobs, then the batch rows (fired events go with them)."""
        t = self._db.tables
        jobs, batches = t.jobs, t.batches
        live = [s.value for s in LIVE_STATUSES]
        still_live = select(jobs.c.id).where(jobs.c.batch_id == batches.c.id, jobs.c.status.in_(live)).exists()
        had_failures = (
            select(jobs.c.id)
            .where(
                jobs.c.batch_id == batches.c.id,
                jobs.c.batch_event.is_(None),
                jobs.c.status.in_([s.value for s in FAILURES]),
            )
            .exists()
        )
        old_enough = batches.c.finished_at < finished_before
        if failed_before is None:
            old_enough = and_(old_enough, ~had_failures)
        else:
            old_enough = and_(old_enough, or_(~had_failures, batches.c.finished_at < failed_before))
        deleted = 0
        with self._db.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.status != "active", batches.c.finished_at.is_not(None), old_enough, ~still_live)
                    .order_by(batches.c.finished_at)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                deleted = int(conn.execute(delete(jobs).where(jobs.c.batch_id.in_(ids))).rowcount)
                conn.execute(delete(batches).where(batches.c.id.in_(ids)))
        return deleted

    def _prune_batch(self, statuses: list[str], before: object, batch: int) -> int:
        jobs = self._db.tables.jobs
        oldest = (
            select(jobs.c.id)
            # Jobs of a batch or a workflow go with it (_prune_batches, _prune_workflows), never alone.
            .where(
                jobs.c.status.in_(statuses),
                jobs.c.finished_at < before,
                jobs.c.batch_id.is_(None),
                jobs.c.workflow_id.is_(None),
            )
            .order_by(jobs.c.finished_at)
            .limit(batch)
        )
        oldest = self._db.driver.lock_for_prune(oldest)  # two pruners never wait on each other's rows
        with self._db.engine.begin() as conn:
            return int(conn.execute(delete(jobs).where(self._db.driver.id_in(jobs.c.id, oldest))).rowcount)
