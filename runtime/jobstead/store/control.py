"""Steering jobs from outside a worker: cancel, retry, pause and resume."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from ..errors import InvalidState, JobNotFound
from ..status import CLAIMABLE_STATUSES, JobStatus
from .batches import Batches
from .database import Database
from .drivers.base import WAKE_ALL
from .records import JobRecord
from .rows import job_record

PauseScope = Literal["all", "queue", "handler"]
RETRYABLE = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)


class Control:
    def __init__(self, db: Database, clock: Clock, batches: Batches) -> None:
        self._db = db
        self._clock = clock
        self._batches = batches

    def cancel(self, job_id: int) -> JobRecord:
        """Cancel a waiting job at once; ask a running one to stop.

        A running job keeps ``running`` until its worker notices the request and
        ends it ``cancelled``: at once where the database has wake-ups (a
        NOTIFY reaches the worker running it), else at its next lease renewal.
        Cancelling a finished job changes nothing and returns it as it is.
        """
        jobs = self._db.tables.jobs
        now = self._clock()
        with self._db.begin_bounded() as conn:  # a frozen caller must not hold the job's row
            row = (
                self._db.driver.execute_update(
                    conn,
                    update(jobs)
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status.in_([s.value for s in CLAIMABLE_STATUSES]),
                    )
                    .values(status=JobStatus.CANCELLED.value, finished_at=now)
                    .returning(*jobs.c),
                )
                .mappings()
                .first()
            )
            if row is not None and row["batch_id"] is not None:
                self._batches.settle(conn, [row["batch_id"]])
            if row is None:
                row = (
                    self._db.driver.execute_update(
                        conn,
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                        .values(cancel_requested=True)
                        .returning(*jobs.c),
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    self._batches.notify_cancel(conn, [job_id])
            if row is None:
                row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                raise JobNotFound(f"no job with id {job_id}")
            return job_record(row, now)

    def retry(self, job_id: int) -> JobRecord:
        """Queue a dead, failed or cancelled job again, with one more attempt allowed."""
        jobs = self._db.tables.jobs
        now = self._clock()
        try:
            with self._db.begin_bounded() as conn:
                row = (
                    self._db.driver.execute_update(
                        conn,
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in RETRYABLE]))
                        .values(
                            status=JobStatus.QUEUED.value,
                            run_at=now,
                            finished_at=None,
                            max_attempts=jobs.c.attempts + 1,
                            cancel_requested=False,
                        )
                        .returning(*jobs.c),
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    current = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
                    if current is None:
                        raise JobNotFound(f"no job with id {job_id}")
                    raise InvalidState(f"job {job_id} is {current}; only dead, failed or cancelled jobs can be retried")
                if row["batch_id"] is not None and row["batch_event"] is None:
                    self._batches.reopen(conn, [row["batch_id"]])  # its stats follow; fired continuations stay fired
                return job_record(row, now)
        except IntegrityError as exc:
            raise InvalidState(f"job {job_id} cannot be retried: another live job holds its deduplication key") from exc

    def pause(self, scope: PauseScope, name: str = "") -> bool:
        """Stop claims for everything, a queue or a handler; True if it was not paused yet."""
        pauses = self._db.tables.pauses
        name = "" if scope == "all" else name
        with self._db.engine.begin() as conn:
            exists = conn.execute(select(pauses.c.scope).where(pauses.c.scope == scope, pauses.c.name == name)).first()
            if exists:
                return False
            conn.execute(pauses.insert().values(scope=scope, name=name, created_at=self._clock()))
            return True

    def resume(self, scope: PauseScope, name: str = "") -> bool:
        pauses = self._db.tables.pauses
        name = "" if scope == "all" else name
        with self._db.engine.begin() as conn:
            resumed = bool(conn.execute(delete(pauses).where(pauses.c.scope == scope, pauses.c.name == name)).rowcount)
            if resumed:  # wake every listening worker now, not at its next poll
                self._db.driver.notify(conn, self._db.tables.notify_channel, [WAKE_ALL])
            return resumed

    def paused(self) -> list[tuple[str, str]]:
        pauses = self._db.tables.pauses
        with self._db.engine.connect() as conn:
            return [(r.scope, r.name) for r in conn.execute(select(pauses).order_by(pauses.c.scope, pauses.c.name))]
