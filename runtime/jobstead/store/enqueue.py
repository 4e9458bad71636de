"""Writing new jobs: one at a time, in bulk, and inside the caller's transaction.

On PostgreSQL, jobs without a deduplication key go in by one statement of
constant text per set of options, whatever the number of jobs: the arguments
travel as one JSON array, which the server unpacks (``jsonb_array_elements``)
into an ``INSERT ... SELECT`` that also sends the NOTIFY and returns only the
new ids. Constant text means psycopg and PostgreSQL parse and plan it once per
connection (SQLAlchemy's multi-row ``VALUES`` lists were parsed again for every
batch: most of the bulk defer's time), and one JSON text is dumped by the C
encoder instead of element by element. The records handed back are built from
what was sent, so nothing is read back that the caller just wrote.

When Jobstead owns the transaction and that one statement is all there is to
do, it runs without ``BEGIN``/``COMMIT`` around it (a single statement is its
own transaction in PostgreSQL): one round trip per ``defer`` instead of three.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

import psycopg
from sqlalchemy import Connection, TextClause, and_, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

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
        self._unnest_insert = _unnest_insert(db) if db.is_postgres else None

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
        if self._unnest_insert is not None and len(_option_groups(jobs)) == 1 and jobs[0].key is None:
            return self._insert_one_statement(jobs)
        with self._db.engine.begin() as conn:
            return self._insert(conn, jobs)

    def _insert(self, conn: Connection, jobs: Sequence[NewJob]) -> list[JobRecord]:
        now = self._clock()
        by_position: dict[int, JobRecord] = {}
        plain = [i for i, j in enumerate(jobs) if j.key is None]
        if plain:
            records = self._insert_plain(conn, [jobs[i] for i in plain], now)
            by_position.update(zip(plain, records, strict=True))
        keyed_queues: set[str] = set()
        for i, job in enumerate(jobs):
            if job.key is not None:
                by_position[i] = self._insert_keyed(conn, job, now)
                keyed_queues.add(job.queue)
        if self._db.is_postgres:
            # Plain jobs sent their NOTIFY in their own statement; keyed ones do it here.
            for queue in sorted(keyed_queues):
                conn.execute(select(func.pg_notify(self._db.tables.notify_channel, queue)))
        return [by_position[i] for i in range(len(jobs))]

    def _insert_one_statement(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Jobs sharing their options, on their own: one autocommitted statement, on the driver.

        A statement is its own transaction, so no BEGIN/COMMIT round trips. It
        runs on the pooled psycopg connection directly: SQLAlchemy's connection,
        execution and result layers (and switching a pooled connection to
        autocommit through them) cost more client CPU than the statement itself,
        most of a single ``defer``. The connection goes back to the pool as it
        came (autocommit off), or is discarded if it broke.
        """
        now = self._clock()
        pooled = self._db.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None
            driver.autocommit = True
            try:
                rows = driver.execute(self._driver_insert, self._group_params(jobs, now)).fetchall()
            finally:
                driver.autocommit = False
        except psycopg.Error as exc:
            pooled.invalidate()  # whatever state it is in, no one else gets it
            # The same exception types as every other store call (SQLAlchemy's wrappers).
            raise DBAPIError.instance(self._driver_insert, None, exc, psycopg.Error) from exc
        except BaseException:
            pooled.invalidate()
            raise
        finally:
            pooled.close()
        return _in_input_order([row[0] for row in rows], jobs, now)

    @cached_property
    def _driver_insert(self) -> str:
        """``_unnest_insert`` in psycopg's own placeholder style."""
        assert self._unnest_insert is not None
        return str(self._unnest_insert.compile(dialect=self._db.engine.dialect))

    def _group_params(self, group: Sequence[NewJob], now: datetime) -> dict[str, Any]:
        """Everything about a group of jobs in one JSON text: one C dump instead of a dozen
        psycopg parameter dumps; times as epoch seconds, which the server turns back into
        the same microsecond."""
        first = group[0]
        given = {
            "args": [j.args for j in group],
            "handler": first.handler,
            "queue": first.queue,
            "priority": first.priority,
            "status": _status(first, now),
            "run_at": (first.run_at or now).timestamp(),
            "now": now.timestamp(),
            "max_attempts": first.max_attempts,
            "retry": first.retry.to_json() if first.retry else None,
            "timeout": first.timeout,
            "tenant": first.tenant,
            "metadata": first.metadata,
        }
        return {"given": json.dumps(given), "channel": self._db.tables.notify_channel}

    def _insert_plain(self, conn: Connection, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        if self._unnest_insert is not None:
            records: dict[int, JobRecord] = {}
            for positions in _option_groups(jobs).values():
                group = [jobs[i] for i in positions]
                inserted = conn.execute(self._unnest_insert, self._group_params(group, now))
                records.update(zip(positions, _in_input_order(inserted.scalars().all(), group, now), strict=True))
            return [records[i] for i in range(len(jobs))]
        table = self._db.tables.jobs
        values = [_values(j, now) for j in jobs]
        if len(values) == 1:
            rows = [conn.execute(insert(table).returning(*table.c), values[0]).mappings().one()]
        else:
            # executemany + RETURNING: SQLAlchemy batches these into multi-row INSERTs
            # ("insertmanyvalues") and keeps the input order.
            rows = list(
                conn.execute(insert(table).returning(*table.c, sort_by_parameter_order=True), values).mappings().all()
            )
        return [job_record(r, now) for r in rows]

    def _insert_keyed(self, conn: Connection, job: NewJob, now: datetime) -> JobRecord:
        jobs = self._db.tables.jobs
        dialect_insert = postgresql.insert if self._db.is_postgres else sqlite.insert
        stmt = (
            dialect_insert(jobs)
            .values(_values(job, now))
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


def _status(job: NewJob, now: datetime) -> JobStatus:
    return JobStatus.SCHEDULED if job.run_at is not None and job.run_at > now else JobStatus.QUEUED


def _values(job: NewJob, now: datetime) -> dict[str, Any]:
    return {
        "handler": job.handler,
        "queue": job.queue,
        "priority": job.priority,
        "status": _status(job, now).value,
        "args": job.args,
        "run_at": job.run_at or now,
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


def _option_groups(jobs: Sequence[NewJob]) -> dict[tuple[Any, ...], list[int]]:
    """Positions of the jobs that share every setting but their arguments (one INSERT each).

    ``defer_many`` gives one group; so does a single ``defer``.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, j in enumerate(jobs):
        options = (
            j.handler,
            j.queue,
            j.priority,
            j.run_at,
            j.max_attempts,
            j.retry,
            j.timeout,
            j.tenant,
            None if j.metadata is None else json.dumps(j.metadata, sort_keys=True),
            j.key,
        )
        groups.setdefault(options, []).append(i)
    return groups


def _in_input_order(ids: Sequence[int], group: Sequence[NewJob], now: datetime) -> list[JobRecord]:
    """The records of a group just inserted, from the ids its INSERT returned.

    Ids come from the sequence in the order the rows were fed to the INSERT
    (``ORDER BY ord``), so ascending ids are the input order.
    """
    return [_sent(job_id, job, now) for job_id, job in zip(sorted(ids), group, strict=True)]


def _sent(job_id: int, job: NewJob, now: datetime) -> JobRecord:
    """The record of a job just inserted from ``job``: what reading its row back would give."""
    return JobRecord(
        id=job_id,
        handler=job.handler,
        queue=job.queue,
        priority=job.priority,
        status=_status(job, now),
        args=job.args,
        run_at=job.run_at or now,
        created_at=now,
        started_at=None,
        finished_at=None,
        attempts=0,
        max_attempts=job.max_attempts,
        retry=job.retry,
        timeout=job.timeout,
        key=None,
        tenant=job.tenant,
        metadata=job.metadata,
        result=None,
        error=None,
        checkpoint=None,
        lease_owner=None,
        lease_expires_at=None,
        cancel_requested=False,
    )


def _unnest_insert(db: Database) -> TextClause:
    """Insert one job per element of the ``args`` array of ``given``, wake their queue's workers, return the ids.

    The NOTIFY rides in the same statement; PostgreSQL delivers it at commit,
    so a rolled-back defer wakes no one.
    """
    jobs = db.tables.qualified(db.tables.jobs)
    return text(
        f"""
        WITH given AS (
            SELECT g->>'handler' AS handler, g->>'queue' AS queue, CAST(g->>'priority' AS int) AS priority,
                   g->>'status' AS status, to_timestamp(CAST(g->>'run_at' AS float8)) AS run_at,
                   to_timestamp(CAST(g->>'now' AS float8)) AS now, CAST(g->>'max_attempts' AS int) AS max_attempts,
                   NULLIF(g->'retry', 'null') AS retry, CAST(g->>'timeout' AS float8) AS timeout,
                   g->>'tenant' AS tenant, NULLIF(g->'metadata', 'null') AS metadata, g->'args' AS args
            FROM (SELECT CAST(:given AS jsonb) AS g) AS call
        ), inserted AS (
            INSERT INTO {jobs} (handler, queue, priority, status, args, run_at, created_at, attempts,
                                max_attempts, retry, timeout, tenant, metadata, cancel_requested)
            SELECT o.handler, o.queue, o.priority, o.status, b.args, o.run_at, o.now, 0,
                   o.max_attempts, o.retry, o.timeout, o.tenant, o.metadata, false
            FROM given AS o, jsonb_array_elements(o.args) WITH ORDINALITY AS b(args, ord)
            ORDER BY b.ord
            RETURNING id
        ), notified AS (
            SELECT pg_notify(CAST(:channel AS text), queue) FROM given
        )
        SELECT inserted.id FROM inserted CROSS JOIN notified
        """
    )
