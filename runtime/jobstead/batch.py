"""Batches from the app's side: the ``Batch`` handle, and checking ``JobSpec`` lists (unsent jobs).

``resize.job(image_id=1)`` validates its arguments and options at once, like
``defer``, but writes nothing: a list of specs becomes a batch with
``app.defer_batch``, continuations included. The store does the rest in one
transaction (see ``store/batches.py`` for why each continuation fires exactly
once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from .deferred import Deferred
from .errors import InvalidArguments
from .handler import Handler, JobSpec, StoreProvider
from .options import AsyncTransaction, SyncTransaction
from .polling import poll_until, poll_until_async
from .store import BatchRecord, BatchStats, NewJob


class Batch:
    """A batch as last read: ``id``, ``status``, ``stats``; ``refresh``, ``wait``, ``append``, ``cancel``."""

    def __init__(self, store: StoreProvider, handlers: Mapping[str, Handler[Any, Any]], record: BatchRecord) -> None:
        self._store = store
        #: The app's handlers: a job appended must be of one of them.
        self._handlers = handlers
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
        self.record = self._store().batches.get(self.id)
        return self

    def wait(self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0) -> BatchStats:
        """Block until every job is final and the continuations are deferred; return the final stats.

        Never raises for failed jobs (look at the stats); ``TimeoutError`` when
        ``timeout`` seconds pass first. Polls one row with backoff: no lock held.
        """
        if not poll_until(lambda: self.refresh().status != "active", timeout, poll, max_poll):
            raise TimeoutError(f"batch {self.id} still active after {timeout} s ({self._progress()})")
        return self.stats

    async def wait_async(
        self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0
    ) -> BatchStats:
        if not await poll_until_async(lambda: self.refresh().status != "active", timeout, poll, max_poll):
            raise TimeoutError(f"batch {self.id} still active after {timeout} s ({self._progress()})")
        return self.stats

    def append(self, specs: Sequence[JobSpec], *, session: SyncTransaction | None = None) -> list[Deferred[Any]]:
        """Add jobs; the continuations still fire once, when the enlarged batch completes."""
        jobs = [check_spec(self._handlers, spec, "append") for spec in specs]
        store = self._store()
        records = store.batches.append(self.id, jobs, connection=sync_connection(session))
        self.refresh()
        return [Deferred(store, r) for r in records]

    def cancel(self) -> None:
        """Cancel the waiting jobs at once and tell the running ones to stop now; a no-op once complete."""
        self._store().batches.cancel(self.id)
        self.refresh()

    def _progress(self) -> str:
        return f"{self.stats.finished} of {self.stats.total} jobs final"


def check_spec(handlers: Mapping[str, Handler[Any, Any]], spec: object, where: str) -> NewJob:
    """The job of ``spec``, if it is a spec of one of ``handlers`` (an app's own)."""
    if not isinstance(spec, JobSpec):
        raise InvalidArguments(f"{where}: expected a job spec (handler.job(...)), not {spec!r}")
    if handlers.get(spec.job.handler) is not spec.made_by:
        raise InvalidArguments(f"{where}: handler {spec.job.handler!r} is not registered in this app")
    return spec.job


def continuation_jobs(handlers: Mapping[str, Handler[Any, Any]], given: dict[str, object]) -> dict[str, NewJob]:
    """The continuations of ``defer_batch``, checked now: nothing is written if one is wrong."""
    jobs: dict[str, NewJob] = {}
    for event, spec in given.items():
        if spec is None:
            continue
        job = check_spec(handlers, spec, f"on_{event}")
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


__all__ = ["Batch", "JobSpec", "check_spec", "continuation_jobs", "in_async_transaction", "sync_connection"]
