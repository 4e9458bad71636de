"""Writing new jobs: one at a time, in bulk, and inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock
from ..status import JobStatus
from .database import Database
from .records import JobRecord, NewJob
from .rows import job_record
from .tables import LIVE_KEY_PREDICATE


class Enqueuer:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def insert(self, jobs: Sequence[NewJob], connection: Connection | None = None) -> list[JobRecord]:
        """Insert ``jobs`` in ``connection``'s transaction, or in a transaction of our own.

        A job with a deduplication key that is already taken by a live job of the
        same handler is not inserted: the live job comes back in its place. The
        partial unique index decides, so concurrent defers and rolled-back ones
        cannot slip a duplicate through.
        """
        if not jobs:
            return []
        if connection is not None:
            return self._insert(connection, jobs)
        with self._db.engine.begin() as conn:
            return self._insert(conn, jobs)

    def _insert(self, conn: Connection, jobs: Sequence[NewJob]) -> list[JobRecord]:
        now = self._clock()
        plain = [j for j in jobs if j.key is None]
        by_position: dict[int, JobRecord] = {}
        if plain:
            rows = self._insert_plain(conn, [self._values(j, now) for j in plain])
            positions = [i for i, j in enumerate(jobs) if j.key is None]
            by_position.update(zip(positions, (job_record(r, now) for r in rows), strict=True))
        for i, job in enumerate(jobs):
            if job.key is not None:
                by_position[i] = self._insert_keyed(conn, job, now)
        if self._db.is_postgres:
            for queue in sorted({j.queue for j in jobs}):
                conn.execute(select(func.pg_notify(self._db.tables.notify_channel, queue)))
        return [by_position[i] for i in range(len(jobs))]

    def _values(self, job: NewJob, now: datetime) -> dict[str, Any]:
        run_at = job.run_at or now
        return {
            "handler": job.handler,
            "queue": job.queue,
            "priority": job.priority,
            "status": (JobStatus.SCHEDULED if run_at > now else JobStatus.QUEUED).value,
            "args": job.args,
            "run_at": run_at,
            "created_at": now,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "retry": job.retry.to_json() if job.retry else None,
            "timeout": job.timeout,
            "key": job.key,
            "tenant": job.tenant,
            "metadata": job.metadata,
            "cancel_requested": False,
        }

    def _insert_plain(self, conn: Connection, values: list[dict[str, Any]]) -> list[Any]:
        jobs = self._db.tables.jobs
        if len(values) == 1:
            return [conn.execute(insert(jobs).returning(*jobs.c), values[0]).mappings().one()]
        # executemany + RETURNING: SQLAlchemy batches these into multi-row INSERTs
        # ("insertmanyvalues") and keeps the input order.
        result = conn.execute(insert(jobs).returning(*jobs.c, sort_by_parameter_order=True), values)
        return list(result.mappings().all())

    def _insert_keyed(self, conn: Connection, job: NewJob, now: datetime) -> JobRecord:
        jobs = self._db.tables.jobs
        dialect_insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        stmt = (
            dialect_insert(jobs)
            .values(self._values(job, now))
            .on_conflict_do_nothing(index_elements=["handler", "key"], index_where=text(LIVE_KEY_PREDICATE))
            .returning(*jobs.c)
        )
        row = conn.execute(stmt).mappings().first()
        if row is None:
            row = (
                conn.execute(
                    select(jobs).where(
                        and_(
                            jobs.c.handler == job.handler,
                            jobs.c.key == job.key,
                            text(LIVE_KEY_PREDICATE),
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                # The live job finished between our INSERT and SELECT: the key is free again.
                return self._insert_keyed(conn, job, now)
        return job_record(row, now)
