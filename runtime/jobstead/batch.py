"""Batches from the app's side: ``JobSpec`` (an unsent job) and the ``Batch`` handle.

``resize.job(image_id=1)`` validates its arguments and options at once, like
``defer``, but writes nothing: a list of specs becomes a batch with
``app.defer_batch``, continuations included. The store does the rest in one
transaction (see ``store/batches.py`` for why each continuation fires exactly
once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from .deferred import Deferred
from .errors import InvalidArguments
from .options import AsyncTransaction, SyncTransaction
from .store import BatchRecord, BatchStats, NewJob, Store

if TYPE_CHECKING:
    from .app import App


@dataclass(frozen=True)
class JobSpec:
    """A job not yet sent: its handler, its checked arguments and its resolved options."""

    app: App
    job: NewJob

    @property
    def handler(self) -> str:
        return self.job.handler

    @property
    def args(self) -> dict[str, Any]:
        return self.job.args

    def __repr__(self) -> str:
        return f"JobSpec({self.job.handler}, {self.job.args!r})"


class Batch:
    """A batch as last read: ``id``, ``status``, ``stats``; ``refresh``, ``wait``, ``append``, ``cancel``."""

    def __init__(self, app: App, record: BatchRecord) -> None:
        self._app = app
        self.record = record

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.status} {self.stats.finished}/{self.stats.total}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def status(self) -> str:
        """``active`` until every job is final; then ``succeeded``, ``failed`` or ``cancelled``."""
        return self.record.status

    @property
    def stats(self) -> BatchStats:
        return self.record.stats

    @property
    def tenant(self) -> str | None:
        return self.record.tenant

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self.record.metadata

    @property
    def continuations(self) -> list[tuple[str, int]]:
        """(event, job id) of each continuation deferred so far."""
        return list(self.record.continuations)

    def to_json(self) -> dict[str, Any]:
        return self.record.to_json()

    def refresh(self) -> Batch:
        self.record = self._app.store.batches.get(self.id)
        return self

    def wait(self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0) -> BatchStats:
        """Block until every job is final and the continuations are deferred; return the final stats.

        Never raises for failed jobs (look at the stats); ``TimeoutError`` when
        ``timeout`` seconds pass first. Polls one row with backoff: no lock held.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        while self.refresh().status == "active":
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {self.id} still active after {timeout} s ({self._progress()})")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, max_poll)
        return self.stats

    async def wait_async(
        self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0
    ) -> BatchStats:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = poll
        while (await asyncio.to_thread(self.refresh)).status == "active":
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"batch {self.id} still active after {timeout} s ({self._progress()})")
            await asyncio.sleep(delay if deadline is None else max(0.0, min(delay, deadline - loop.time())))
            delay = min(delay * 1.5, max_poll)
        return self.stats

    def append(self, specs: Sequence[JobSpec], *, session: SyncTransaction | None = None) -> list[Deferred[Any]]:
        """Add jobs; the continuations still fire once, when the enlarged batch completes."""
        jobs = [check_spec(self._app, spec, "append") for spec in specs]
        store = self._app.store
        records = store.batches.append(self.id, jobs, connection=sync_connection(session))
        self.refresh()
        return [Deferred(store, r) for r in records]

    def cancel(self) -> None:
        """Cancel the waiting jobs at once and tell the running ones to stop now; a no-op once complete."""
        self._app.store.batches.cancel(self.id)
        self.refresh()

    def _progress(self) -> str:
        return f"{self.stats.finished} of {self.stats.total} jobs final"


def check_spec(app: App, spec: object, where: str) -> NewJob:
    if not isinstance(spec, JobSpec):
        raise InvalidArguments(f"{where}: expected a job spec (handler.job(...)), not {spec!r}")
    if spec.app is not app or spec.job.handler not in app.handlers:
        raise InvalidArguments(f"{where}: handler {spec.job.handler!r} is not registered in this app")
    return spec.job


def continuation_jobs(app: App, given: dict[str, object]) -> dict[str, NewJob]:
    """The continuations of ``defer_batch``, checked now: nothing is written if one is wrong."""
    jobs: dict[str, NewJob] = {}
    for event, spec in given.items():
        if spec is None:
            continue
        job = check_spec(app, spec, f"on_{event}")
        if job.run_at is not None:
            raise InvalidArguments(
                f"on_{event}: a continuation runs when its batch completes; give it no delay or run_at"
            )
        if job.key is not None:
            raise InvalidArguments(f"on_{event}: a continuation runs once per batch already; give it no key")
        jobs[event] = job
    return jobs


def sync_connection(session: SyncTransaction | AsyncTransaction | None) -> Connection | None:
    if isinstance(session, AsyncSession | AsyncConnection):
        raise InvalidArguments("an async session needs defer_batch_async(), not defer_batch()")
    if isinstance(session, Session):
        return session.connection()
    return session


async def in_async_transaction(
    session: SyncTransaction | AsyncTransaction | None, work: Callable[[Connection | None], Any]
) -> Any:
    """Run the blocking ``work`` in ``session``'s transaction (or its own, on a thread)."""
    if session is None:
        return await asyncio.to_thread(work, None)
    if isinstance(session, AsyncSession):
        return await session.run_sync(lambda s: work(s.connection()))
    if isinstance(session, AsyncConnection):
        return await session.run_sync(work)
    return work(session.connection() if isinstance(session, Session) else session)


def batch_of(app: App, store: Store, batch_id: int) -> Batch:
    return Batch(app, store.batches.get(batch_id))
