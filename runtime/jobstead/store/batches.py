"""Batches: many jobs as one, with continuations that run exactly once.

A batch is a row in ``batches`` plus its member jobs (``jobs.batch_id``). Its
continuations (``on_success``, ``on_finish``, ``on_failure``) are stored with
it when it is created and deferred as ordinary jobs by ``settle``, which runs
inside the SAME transaction as every change that can make a member final (a
completion, a rescue that ends a job dead, a cancel). What makes each fire
exactly once, whatever crashes or races:

1. ``settle`` locks the batch row first (``FOR UPDATE``; SQLite's write lock
   already serialises everything). Two workers finishing the batch's last two
   jobs at the same instant queue on that lock; the second one's count,
   taken after the first committed, sees the batch complete, the first one's
   saw the other job still running. So exactly one of them settles it.
2. Each continuation's job is inserted together with a ``batch_events`` row
   whose primary key is (batch, event): a second insert of the same event,
   should the lock logic ever be wrong, fails the transaction rather than
   deferring a duplicate (``continuations``, which workflows fire through too).
3. Nothing is counted: the statistics are a count of the member rows by
   status each time, so a crash between two steps leaves nothing to correct
   (Sidekiq #6852's double decrement cannot happen).

Semantics: ``on_failure`` fires once, when the first member ends ``failed``
or ``dead`` (a retry that later succeeds does not count: ``retrying`` is not
final). When every member is final the batch is ``cancelled`` if it was
cancelled as a whole, ``succeeded`` if every member succeeded, else
``failed``; ``on_success`` fires only for ``succeeded``, ``on_finish`` always.
An empty batch is complete at once. Jobs appended to a finished batch reopen
it (its statistics follow), but a continuation that fired never fires again;
so does a member retried from dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, func, insert, select, update

from ..clock import Clock
from ..errors import BatchNotFound, InvalidArguments
from ..transitions import ASK_TO_STOP, CANCEL
from . import statistics
from .continuations import Continuations, stored
from .database import Database
from .drivers.base import CANCEL_PREFIX
from .enqueue import Enqueuer
from .ids import check_filter, lookup_id
from .moves import apply_change, follow
from .new_jobs import member_of
from .records import BATCH_EVENTS, BatchRecord, BatchStats, BatchStatus, JobRecord, NewJob


class Batches:
    def __init__(self, db: Database, clock: Clock, enqueuer: Enqueuer) -> None:
        self._db = db
        self._clock = clock
        self._enqueuer = enqueuer
        self._continuations = Continuations(enqueuer, clock, db.tables.batch_events, "batch_id")

    # -- writing ---------------------------------------------------------------

    def create(
        self,
        jobs: Sequence[NewJob],
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        continuations: Mapping[str, NewJob] | None = None,
        connection: Connection | None = None,
    ) -> tuple[int, list[JobRecord]]:
        """Write a batch and its members in one transaction (the caller's, if given); return its id and jobs."""
        given = dict(continuations or {})
        unknown = set(given) - set(BATCH_EVENTS)
        if unknown:
            raise InvalidArguments(f"unknown batch event(s) {sorted(unknown)}: use {', '.join(BATCH_EVENTS)}")
        if connection is not None:
            return self._create(connection, jobs, tenant, metadata, given)
        with self._db.engine.begin() as conn:
            created = self._create(conn, jobs, tenant, metadata, given)
        statistics.after_bulk_write(self._db, len(jobs))  # committed: its members
        return created

    def _create(
        self,
        conn: Connection,
        jobs: Sequence[NewJob],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        continuations: dict[str, NewJob],
    ) -> tuple[int, list[JobRecord]]:
        batches = self._db.tables.batches
        batch_id = int(
            conn.execute(
                insert(batches)
                .values(
                    tenant=tenant,
                    metadata=metadata,
                    status="active",
                    continuations={event: stored(job) for event, job in continuations.items()},
                    created_at=self._clock(),
                )
                .returning(batches.c.id)
            ).scalar_one()
        )
        records = self._add(conn, batch_id, jobs, tenant)
        if not jobs:
            self.settle(conn, [batch_id])  # an empty batch is complete at once
        return batch_id, records

    def append(self, batch_id: int, jobs: Sequence[NewJob], *, connection: Connection | None = None) -> list[JobRecord]:
        """Add members; continuations still fire once, when the enlarged batch completes."""
        if connection is not None:
            return self._append(connection, batch_id, jobs)
        # A frozen caller holds the batch row this long at most, not for the whole freeze.
        with self._db.begin_bounded() as conn:
            records = self._append(conn, batch_id, jobs)
        statistics.after_bulk_write(self._db, len(jobs))  # committed: the new members
        return records

    def _append(self, conn: Connection, batch_id: int, jobs: Sequence[NewJob]) -> list[JobRecord]:
        row = self._lock(conn, batch_id)
        records = self._add(conn, batch_id, jobs, row["tenant"])
        if jobs and row["status"] != "active":
            # Reopened: its stats follow the new members; fired continuations stay fired.
            self._set_status(conn, batch_id, "active", finished=False)
        return records

    def _add(self, conn: Connection, batch_id: int, jobs: Sequence[NewJob], tenant: str | None) -> list[JobRecord]:
        members = [member_of(job, batch_id, tenant) for job in jobs]
        return self._enqueuer.insert(members, connection=conn) if members else []

    def cancel(self, batch_id: int) -> list[int]:
        """Cancel every waiting member at once and tell running ones to stop now; return the running ones' ids.

        Cancelling a batch that already completed changes nothing.
        """
        jobs, batches = self._db.tables.jobs, self._db.tables.batches
        now = self._clock()
        # Locks the batch row and its members: a frozen caller would stop their completions.
        with self._db.begin_bounded() as conn:
            row = self._lock(conn, batch_id)
            if row["status"] != "active" or row["cancelled_at"] is not None:
                return []
            conn.execute(update(batches).where(batches.c.id == batch_id).values(cancelled_at=now))
            members = and_(jobs.c.batch_id == batch_id, jobs.c.batch_event.is_(None))
            moved = [m for change in (CANCEL, ASK_TO_STOP) for m in apply_change(self._db, conn, change, members, now)]
            follow(self._db, conn, self, moved)
            self.settle(conn, [batch_id])  # an all-running batch settles too: it is cancelled now
            return [m.record.id for m in moved if m.change is ASK_TO_STOP]

    def reopen(self, conn: Connection, batch_ids: Iterable[int]) -> None:
        """A member was retried from dead: the batch is active again (its fired continuations stay fired)."""
        batches = self._db.tables.batches
        ids = sorted(set(batch_ids))
        if ids:
            conn.execute(
                update(batches)
                .where(batches.c.id.in_(ids), batches.c.status != "active")
                .values(status="active", finished_at=None)
            )

    # -- settling: the exactly-once part -----------------------------------------

    def settle(self, conn: Connection, batch_ids: Iterable[int]) -> list[tuple[int, str, int]]:
        """Fire what the members' current states call for, in ``conn``'s transaction; return (batch, event, job)."""
        fired: list[tuple[int, str, int]] = []
        for batch_id in sorted(set(batch_ids)):  # one lock order for everyone: no deadlocks
            row = self._lock(conn, batch_id, missing_ok=True)
            if row is None:
                continue
            stats = self._stats(conn, batch_id)
            if stats.failed + stats.dead > 0:
                fired += self._fire(conn, row, "failure")
            if stats.finished < stats.total:
                continue
            status: BatchStatus = (
                "cancelled"
                if row["cancelled_at"] is not None
                else "succeeded"
                if stats.succeeded == stats.total
                else "failed"
            )
            if row["status"] != status:
                self._set_status(conn, batch_id, status, finished=True)
            if status == "succeeded":
                fired += self._fire(conn, row, "success")
            fired += self._fire(conn, row, "finish")
        return fired

    def _fire(self, conn: Connection, row: RowMapping, event: str) -> list[tuple[int, str, int]]:
        batch_id = int(row["id"])
        job_id = self._continuations.fire(conn, row, event, batch_id=batch_id, batch_event=event)
        return [] if job_id is None else [(batch_id, event, job_id)]

    def _lock(self, conn: Connection, batch_id: int, *, missing_ok: bool = False) -> RowMapping:
        batches = self._db.tables.batches
        looked_up = lookup_id(batch_id, "batch")
        row = None
        if looked_up is not None:
            row = conn.execute(select(batches).where(batches.c.id == looked_up).with_for_update()).mappings().first()
        if row is None and not missing_ok:
            raise BatchNotFound(f"no batch {batch_id}")
        return row  # type: ignore[return-value]

    def _set_status(self, conn: Connection, batch_id: int, status: BatchStatus, *, finished: bool) -> None:
        batches = self._db.tables.batches
        conn.execute(
            update(batches)
            .where(batches.c.id == batch_id)
            .values(status=status, finished_at=self._clock() if finished else None)
        )

    # -- reading -------------------------------------------------------------------

    def get(self, batch_id: int, *, connection: Connection | None = None) -> BatchRecord:
        """The batch as it is now (in ``connection``'s transaction, which may not have committed it yet)."""
        if connection is not None:
            return self._get(connection, batch_id)
        with self._db.engine.connect() as conn:
            return self._get(conn, batch_id)

    def _get(self, conn: Connection, batch_id: int) -> BatchRecord:
        batches = self._db.tables.batches
        looked_up = lookup_id(batch_id, "batch")
        row = None
        if looked_up is not None:
            row = conn.execute(select(batches).where(batches.c.id == looked_up)).mappings().first()
        if row is None:
            raise BatchNotFound(f"no batch {batch_id}")
        return self._record(conn, row)

    def list_batches(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[BatchRecord]:
        """Newest first."""
        check_filter("tenant", tenant)
        batches = self._db.tables.batches
        stmt = select(batches).order_by(batches.c.id.desc()).limit(limit).offset(offset)
        if tenant is not None:
            stmt = stmt.where(batches.c.tenant == tenant)
        if status is not None:
            stmt = stmt.where(batches.c.status == status)
        with self._db.engine.connect() as conn:
            return [self._record(conn, row) for row in conn.execute(stmt).mappings().all()]

    def tenant_stats(self, tenant: str | None) -> BatchStats:
        """Members of every batch of ``tenant``, counted by status."""
        jobs, batches = self._db.tables.jobs, self._db.tables.batches
        of_tenant = select(batches.c.id).where(
            batches.c.tenant == tenant if tenant is not None else batches.c.tenant.is_(None)
        )
        stmt = (
            select(jobs.c.status, func.count())
            .where(jobs.c.batch_id.in_(of_tenant.scalar_subquery()), jobs.c.batch_event.is_(None))
            .group_by(jobs.c.status)
        )
        with self._db.engine.connect() as conn:
            return BatchStats.from_counts({status: int(n) for status, n in conn.execute(stmt).all()})

    def _stats(self, conn: Connection, batch_id: int) -> BatchStats:
        jobs = self._db.tables.jobs
        rows = conn.execute(
            select(jobs.c.status, func.count())
            .where(jobs.c.batch_id == batch_id, jobs.c.batch_event.is_(None))
            .group_by(jobs.c.status)
        ).all()
        return BatchStats.from_counts({status: int(n) for status, n in rows})

    def _record(self, conn: Connection, row: RowMapping) -> BatchRecord:
        fired_events = self._db.tables.batch_events
        fired = conn.execute(
            select(fired_events.c.event, fired_events.c.job_id)
            .where(fired_events.c.batch_id == row["id"])
            .order_by(fired_events.c.fired_at, fired_events.c.event)
        ).all()
        return BatchRecord(
            id=int(row["id"]),
            status=row["status"],
            tenant=row["tenant"],
            metadata=row["metadata"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            cancelled_at=row["cancelled_at"],
            stats=self._stats(conn, int(row["id"])),
            continuations=tuple((str(event), int(job_id)) for event, job_id in fired),
            events=tuple(sorted((row["continuations"] or {}).keys())),
        )


__all__ = ["CANCEL_PREFIX", "Batches"]
