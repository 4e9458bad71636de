"""Steering jobs from outside a worker: cancel, retry, delete, pause and resume."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from ..errors import InvalidState, JobNotFound
from ..transitions import ASK_TO_STOP, CANCEL, DELETE, RETRY, RETRYABLE, JobChange
from .batches import Batches
from .database import Database
from .drivers.base import WAKE_ALL
from .enqueue import Enqueuer
from .moves import Moved, apply_change, follow
from .records import JobRecord
from .rows import job_record
from .workflows import Workflows

PauseScope = Literal["all", "queue", "handler"]
__all__ = ["RETRYABLE", "Control", "PauseScope"]


class Control:
    """Cancel, retry and delete (each one job or many, through the same writer); pause and resume.

    The one-job operations are the many-job ones with one id: the same
    ``JobChange`` (``transitions``), the same writer (``moves``), the same
    batch settling, in a bounded transaction (``Database.begin_bounded``: they
    lock rows a worker's completion waits on, and a frozen caller must not keep
    them). Bulk commands (``store.bulk``) call ``apply`` a chunk at a time.
    """

    def __init__(self, db: Database, clock: Clock, batches: Batches, workflows: Workflows | None = None) -> None:
        self._db = db
        self._clock = clock
        self._batches = batches
        # Stateless: a caller without one at hand (``bulk``) gets one of the same database.
        self._workflows = workflows or Workflows(db, clock, Enqueuer(db, clock))

    def apply(self, changes: Sequence[JobChange], job_ids: Collection[int]) -> list[Moved]:
        """Apply ``changes`` to the jobs ``job_ids``, in one transaction with their batches.

        Each job takes the first change that applies to its status (``CANCEL``
        then ``ASK_TO_STOP``: a waiting job ends, a running one is asked to
        stop); a job no change applies to is left as it is.
        """
        with self._workflows.counted(self._db.begin_bounded()) as conn:
            return self._apply(conn, changes, job_ids, self._clock())

    def _apply(
        self, conn: Connection, changes: Sequence[JobChange], job_ids: Collection[int], now: datetime
    ) -> list[Moved]:
        jobs = self._db.tables.jobs
        left = set(job_ids)
        moved: list[Moved] = []
        for change in changes:
            if not left:
                break
            done = apply_change(self._db, conn, change, jobs.c.id.in_(sorted(left)), now)
            left -= {m.record.id for m in done}
            moved += done
        follow(self._db, conn, self._batches, moved, self._workflows)
        return moved

    def cancel(self, job_id: int) -> JobRecord:
        """Cancel a waiting job at once; ask a running one to stop.

        A running job keeps ``running`` until its worker notices the request and
        ends it ``cancelled``: at once where the database has wake-ups (a
        NOTIFY reaches the worker running it), else at its next lease renewal.
        Cancelling a finished job changes nothing and returns it as it is.
        """
        now = self._clock()
        with self._workflows.counted(self._db.begin_bounded()) as conn:
            moved = self._apply(conn, (CANCEL, ASK_TO_STOP), [job_id], now)
            if moved:
                return moved[0].record
            return self._current(conn, job_id, now)

    def retry(self, job_id: int) -> JobRecord:
        """Queue a dead, failed or cancelled job again, with one more attempt allowed."""
        now = self._clock()
        try:
            with self._workflows.counted(self._db.begin_bounded()) as conn:
                moved = self._apply(conn, (RETRY,), [job_id], now)
                if moved:
                    return moved[0].record
                current = self._current(conn, job_id, now)
        except IntegrityError as exc:
            raise InvalidState(f"job {job_id} cannot be retried: another live job holds its deduplication key") from exc
        raise InvalidState(
            f"job {job_id} is {current.status.value}; only dead, failed or cancelled jobs can be retried"
        )

    def delete(self, job_id: int) -> JobRecord:
        """Delete a job that is not running (its attempts go with it); a running one must be cancelled first.

        A live member of a batch that goes this way settles its batch: if it was
        the last one unfinished, the batch completes and its continuations fire.
        """
        now = self._clock()
        with self._workflows.counted(self._db.begin_bounded()) as conn:
            moved = self._apply(conn, (DELETE,), [job_id], now)
            if moved:
                return moved[0].record
            self._current(conn, job_id, now)
        raise InvalidState(f"job {job_id} is running; cancel it before deleting it")

    def _current(self, conn: Connection, job_id: int, now: datetime) -> JobRecord:
        jobs = self._db.tables.jobs
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return job_record(row, now)

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
