"""The handle ``defer`` returns: follow a job, wait for it, cancel it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from .errors import JobCancelled, JobError, JobFailed, JobNotFound
from .polling import poll_until, poll_until_async
from .status import JobStatus
from .store import AttemptRecord, JobRecord

if TYPE_CHECKING:
    from .store import Store

R = TypeVar("R")

#: wait() polls the job row by primary key, first after this interval, then backing off
#: to MAX_POLL_INTERVAL: the backoff (and the check of ``timeout``) of every handle's wait.
FIRST_POLL_INTERVAL = 0.01
MAX_POLL_INTERVAL = 0.25


class Deferred(Generic[R]):
    """A job by id, with the state last read from the database.

    Attributes are a snapshot: ``refresh()`` (or ``wait()``) reads them again.
    Waiting polls one indexed row with backoff; it holds no lock and no
    connection between polls, so it cannot block the database or a worker.
    ``R`` is the handler's return type, what ``wait()`` returns; a handle from
    ``app.get_job(id)`` knows no handler and is ``Deferred[Any]``.

    A handle never silently points at another job. SQLite hands the id of a
    rolled-back row to the next insert (and ``AUTOINCREMENT`` would not help:
    its counter rolls back with the transaction), so the id alone does not
    name a job. The handle also keeps the job's ``created_at``, written once
    to the microsecond and never changed, and every read checks the row
    against it: a row with this id but another ``created_at`` is someone
    else's job, and the handle raises ``JobNotFound`` instead of showing it.
    """

    def __init__(self, store: Store, record: JobRecord) -> None:
        self._store = store
        self._record = record
        self._created_at = record.created_at

    def __repr__(self) -> str:
        return f"<Deferred job {self.id} {self._record.handler} {self.status.value}>"

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def record(self) -> JobRecord:
        return self._record

    @property
    def status(self) -> JobStatus:
        return self._record.status

    @property
    def attempts(self) -> int:
        return self._record.attempts

    @property
    def result(self) -> R | None:
        """The handler's return value once the job has succeeded (as JSON gave it back), else None."""
        return cast("R | None", self._record.result)

    @property
    def error(self) -> JobError | None:
        return self._record.error

    @property
    def handler(self) -> str:
        return self._record.handler

    def refresh(self) -> Deferred[R]:
        record = self._store.queries.get_job(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} does not exist (pruned, or its transaction is not committed)")
        self._record = self._mine(record)
        return self

    def _mine(self, record: JobRecord) -> JobRecord:
        """``record`` if it is this handle's job, not a later one that was given the same id."""
        if record.created_at != self._created_at:
            raise JobNotFound(
                f"job {self.id} does not exist: the transaction that deferred it was rolled back, and the id "
                "now belongs to another job"
            )
        return record

    def attempts_log(self) -> list[AttemptRecord]:
        self.refresh()
        return self._store.queries.attempts(self.id)

    def cancel(self) -> bool:
        """Cancel the job: True if it is cancelled or asked to stop, False if it had already ended."""
        self.refresh()  # never another job's id
        self._record = self._store.control.cancel(self.id)
        return self._record.status is JobStatus.CANCELLED or self._record.cancel_requested

    async def cancel_async(self) -> bool:
        return await asyncio.to_thread(self.cancel)

    def retry(self) -> Deferred[R]:
        """Queue a dead, failed or cancelled job again with one more attempt (``jobstead jobs retry``).

        Raises ``InvalidState`` for a job in any other state, ``JobNotFound`` if it is gone.
        """
        self.refresh()  # never another job's id
        self._record = self._store.control.retry(self.id)
        return self

    async def retry_async(self) -> Deferred[R]:
        return await asyncio.to_thread(self.retry)

    def wait(self, timeout: float | None = None) -> R:
        """Block until the job has finished; return its result or raise.

        Raises ``JobFailed`` (dead or failed; with the error's type, message and
        traceback), ``JobCancelled``, ``TimeoutError`` after ``timeout`` seconds,
        or ``JobNotFound`` when the job is not in the database: its transaction
        was rolled back (or not committed yet: commit before waiting), or it was
        pruned. Waiting for a row that may never come would block forever.
        """
        if not poll_until(self._poll, timeout, FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL):
            raise TimeoutError(f"job {self.id} still {self.status.value} after {timeout} s")
        return self._outcome()

    async def wait_async(self, timeout: float | None = None) -> R:
        if not await poll_until_async(self._poll, timeout, FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL):
            raise TimeoutError(f"job {self.id} still {self.status.value} after {timeout} s")
        return self._outcome()

    def _poll(self) -> bool:
        record = self._store.queries.get_job(self.id)
        if record is None:
            raise JobNotFound(
                f"job {self.id} is not in the database: the transaction that deferred it was rolled back "
                "or is not committed yet (commit before waiting), or the job was pruned"
            )
        self._record = self._mine(record)
        return self._record.status.is_final

    def _outcome(self) -> R:
        status = self._record.status
        if status is JobStatus.SUCCEEDED:
            return cast(R, self._record.result)
        if status is JobStatus.CANCELLED:
            raise JobCancelled(self.id, status.value, self._record.error)
        raise JobFailed(self.id, status.value, self._record.error)
