"""Writing new jobs: the one way a job enters the database.

``defer``, ``defer_many``, a cron fire, ``jobstead defer``, a batch's jobs and
its continuations all come through ``Enqueuer``: one place that turns a
``NewJob`` (built by ``new_jobs``) into a row, applies deduplication, and
wakes the queue's workers. Jobs without a deduplication
key go through the driver's bulk path (``Driver.insert_plain``; one statement
per set of options on PostgreSQL); keyed and cron jobs through a conditional
INSERT that a partial unique index decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Table, bindparam, func, literal_column, select, text

from .. import tracing
from ..clock import Clock
from ..metrics.worker import deferred
from . import statistics
from .database import Database
from .new_jobs import DEFAULT_PRIORITY, DEFAULT_QUEUE, JobDefaults, share_options
from .records import JobRecord, NewJob, evolve
from .rows import flow_control, job_record, new_job_values, sent_record
from .tables import CRON_FIRE_PREDICATE, LIVE_KEY_PREDICATE


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
        if tracing.ENABLED and tracing.active():  # a `defer` span, its context in each job's metadata
            with tracing.deferring(jobs) as (traced, records):
                records.extend(self._insert_counted(traced, connection))
                return records
        return self._insert_counted(jobs, connection)

    def _insert_counted(self, jobs: Sequence[NewJob], connection: Connection | None) -> list[JobRecord]:
        if connection is not None:
            records = self._insert(connection, jobs)
        elif jobs[0].key is None and jobs[0].workflow_id is None and (len(jobs) == 1 or share_options(jobs)):
            records = self._db.driver.insert_alone(self._db, jobs, self._clock())
        else:
            with self._db.engine.begin() as conn:
                records = self._insert(conn, jobs)
        if connection is None:
            statistics.after_bulk_write(self._db, len(jobs))
        deferred((j.handler, j.queue) for j in jobs)
        return records

    def insert_workflow(
        self,
        workflow: dict[str, Any],
        steps: Sequence[NewJob],
        edges: Sequence[tuple[str, str, str]],
        now: datetime,
        connection: Connection | None,
    ) -> tuple[int, list[JobRecord]] | None:
        """A new workflow and its steps and edges in one statement (``Driver.insert_workflow``), in
        ``connection``'s transaction or alone; its id and its steps' records, in ``steps``' order.

        None where the driver has no such statement, or a trace is being recorded (``insert``
        makes the steps' spans): the caller then writes them one table at a time.
        """
        if tracing.ENABLED and tracing.active():
            return None
        written = self._db.driver.insert_workflow(self._db, connection, workflow, steps, edges, now)
        if written is None:
            return None
        workflow_id, ids = written
        deferred((j.handler, j.queue) for j in steps)
        return workflow_id, [
            sent_record(ids[str(job.step)], evolve(job, workflow_id=workflow_id), now) for job in steps
        ]

    def insert_fire(self, conn: Connection, job: NewJob, now: datetime | None = None) -> JobRecord | None:
        """The job of one cron fire, or None when that fire already has its job.

        The unique index on (cron, fire time) decides, whatever number of
        schedulers race for the same fire.
        """
        assert job.cron_name is not None and job.cron_fire_at is not None
        row = self._insert_unless(conn, self._fire_insert, job, now or self._clock())
        if row is not None:
            self._db.driver.notify(conn, self._db.tables.notify_channel, [job.queue])
            deferred([(job.handler, job.queue)])
        return row

    def handler_defaults(self, conn: Connection, handler: str) -> tuple[str, int]:
        """The queue and priority a job of ``handler`` gets when the caller names none.

        From the handler's row (what its code or its JobHandler published), or
        the built-in defaults for a handler no process has published yet.
        """
        defaults = self.defaults_of(conn, handler)
        return defaults.queue, defaults.priority

    def defaults_of(self, conn: Connection, handler: str) -> JobDefaults:
        """``handler_defaults`` as ``new_jobs`` takes them."""
        handlers = self._db.tables.handlers
        row = conn.execute(select(handlers).where(handlers.c.name == handler)).mappings().first()
        if row is None:
            return JobDefaults(DEFAULT_QUEUE, DEFAULT_PRIORITY)
        return JobDefaults(str(row["queue"]), int(row["priority"]), flow_control(row))

    def _insert(self, conn: Connection, jobs: Sequence[NewJob]) -> list[JobRecord]:
        now = self._clock()
        by_position: dict[int, JobRecord] = {}
        plain = [i for i, j in enumerate(jobs) if j.key is None and j.workflow_id is None]
        if plain:
            records = self._db.driver.insert_plain(self._db, conn, [jobs[i] for i in plain], now)
            by_position.update(zip(plain, records, strict=True))
        # A workflow's jobs differ in their step names: one multi-row INSERT of every column.
        steps = [i for i, j in enumerate(jobs) if j.key is None and j.workflow_id is not None]
        if steps:
            records = self._db.driver.insert_each(self._db, conn, [jobs[i] for i in steps], now)
            by_position.update(zip(steps, records, strict=True))
        keyed_queues: set[str] = set()
        for i, job in enumerate(jobs):
            if job.key is not None:
                by_position[i] = self._insert_keyed(conn, job, now)
                keyed_queues.add(job.queue)
        # Plain jobs woke their queues in their own statement; keyed ones do it here.
        self._db.driver.notify(conn, self._db.tables.notify_channel, sorted(keyed_queues))
        return [by_position[i] for i in range(len(jobs))]

    def _insert_keyed(self, conn: Connection, job: NewJob, now: datetime) -> JobRecord:
        row = self._insert_unless(conn, self._keyed_insert, job, now)
        if row is not None:
            return row
        live = (
            conn.execute(self._live_keyed, {"handler": job.handler, "tenant": job.tenant or "", "key": job.key})
            .mappings()
            .first()
        )
        if live is None:
            # The live job finished between our INSERT and SELECT: the key is free again.
            return self._insert_keyed(conn, job, now)
        return job_record(live, now)

    def _insert_unless(self, conn: Connection, statement: Any, job: NewJob, now: datetime) -> JobRecord | None:
        """INSERT one job unless a row conflicts on the unique index ``statement`` names."""
        row = conn.execute(statement, new_job_values(job, now)).mappings().first()
        return None if row is None else job_record(row, now)

    # The statements of the keyed and cron paths, built once: their values go in as parameters.
    # Building one per job (a VALUES of every column, a RETURNING of every column) cost more
    # client CPU than the rest of a keyed defer.

    @cached_property
    def _keyed_insert(self) -> Any:
        jobs = self._db.tables.jobs
        return self._unless(
            index_elements=[jobs.c.handler, _tenant_scope(jobs), jobs.c.key], index_where=text(LIVE_KEY_PREDICATE)
        )

    @cached_property
    def _fire_insert(self) -> Any:
        return self._unless(index_elements=["cron_name", "cron_fire_at"], index_where=text(CRON_FIRE_PREDICATE))

    @cached_property
    def _live_keyed(self) -> Select[Any]:
        """The live job holding a key (``handler``, ``tenant``: '' for none, ``key``)."""
        jobs = self._db.tables.jobs
        return select(jobs).where(
            jobs.c.handler == bindparam("handler"),
            _tenant_scope(jobs) == bindparam("tenant"),
            jobs.c.key == bindparam("key"),
            text(LIVE_KEY_PREDICATE),
        )

    def _unless(self, **conflict: Any) -> Any:
        """An INSERT of one job, of the columns its parameters give, unless a row conflicts on ``conflict``."""
        jobs = self._db.tables.jobs
        return self._db.driver.upsert(jobs).on_conflict_do_nothing(**conflict).returning(*jobs.c)


def _tenant_scope(jobs: Table) -> ColumnElement[Any]:
    """A job's tenant as the live-key index has it: '' for none."""
    return func.coalesce(jobs.c.tenant, literal_column("''"))
