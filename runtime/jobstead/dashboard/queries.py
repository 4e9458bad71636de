"""Every statement the dashboard runs against Jobstead's tables, and nothing else.

Reads are SQLAlchemy Core over ``store.tables`` and work on both backends.
They are written for a table of millions of finished jobs:

* lists are keyset-paginated on the primary key (``id < :before``), never OFFSET;
* counts by status read only jobs that are not a success, through the partial
  ``jobs_active`` index; succeeded jobs (the bulk of any table) are counted
  per hour through ``jobs_finished``, and the table's total on PostgreSQL comes
  from ``pg_class.reltuples`` once it is large (the page says "about");
* the live-update signature is a handful of index-only look-ups.

It writes nothing: every button (retry, cancel, delete, pause, cron switches)
and its audit row go through the store (``dashboard/actions.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
)

from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, JobStatus
from ..store import AttemptRecord, BatchRecord, CronRecord, JobRecord, Store
from ..store.queries import scope_conditions, status_condition
from ..store.records import effective_status
from ..transitions import CANCELLABLE as CANCELLABLE  # what the buttons may act on: decided there
from ..transitions import RETRYABLE as RETRYABLE
from ..transitions import shown_status
from .limits import LimitShown, handler_limits

#: Above this many rows, PostgreSQL's own estimate stands in for ``count(*)``.
EXACT_COUNT_LIMIT = 100_000
FAILED_FOR_GOOD = (JobStatus.FAILED, JobStatus.DEAD)
#: Finished, but not a success: kept until retention prunes them.
SETTLED = (JobStatus.CANCELLED, JobStatus.DEAD, JobStatus.FAILED)
SEARCH_LIMIT = 200
#: How many of the newest jobs a search by key or argument text reads.
SEARCH_WINDOW = 100_000


@dataclass(frozen=True)
class JobFilter:
    """What the jobs list shows: every field ``None`` shows every job."""

    status: JobStatus | None = None
    handler: str | None = None
    queue: str | None = None
    tenant: str | None = None
    batch: int | None = None
    q: str | None = None
    error: str | None = None
    #: The steps (and continuations) of one workflow.
    workflow: int | None = None

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in vars(self).values())

    def params(self) -> dict[str, str]:
        """As query parameters (for links and the forms that repeat the filter)."""
        return {k: str(v) for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class QueueRow:
    """One (handler, queue) pair of the overview."""

    handler: str
    queue: str
    counts: dict[str, int]
    succeeded_last_hour: int
    failed_last_hour: int
    oldest_waiting: datetime | None
    paused: bool
    series: list[tuple[int, int]]


@dataclass(frozen=True)
class Overview:
    rows: list[QueueRow]
    totals: dict[str, int]
    #: (succeeded, failed) per minute over the last hour, oldest first.
    series: list[tuple[int, int]]
    total_jobs: int
    total_is_estimate: bool
    paused: list[tuple[str, str]]
    #: Each handler's flow control in words, with its use (``limits.py``).
    limits: dict[str, list[LimitShown]] = field(default_factory=dict)

    @property
    def all_paused(self) -> bool:
        return ("all", "") in self.paused

    def queue_paused(self, queue: str) -> bool:
        return ("queue", queue) in self.paused


@dataclass(frozen=True)
class JobRow:
    id: int
    handler: str
    queue: str
    status: JobStatus
    attempts: int
    tenant: str | None
    key: str | None
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    error_type: str | None


@dataclass(frozen=True)
class JobPage:
    rows: list[JobRow]
    #: The ``before`` of the next (older) page; None on the last one.
    next_before: int | None


@dataclass(frozen=True)
class JobDetail:
    job: JobRecord
    attempts: list[AttemptRecord]
    cron_name: str | None
    cron_fire_at: datetime | None
    batch_id: int | None


@dataclass(frozen=True)
class FailureGroup:
    error_type: str
    handler: str
    status: str
    count: int
    last_at: datetime | None
    example_id: int
    example_message: str = ""


@dataclass(frozen=True)
class WorkerRow:
    id: str
    hostname: str
    pid: int
    queues: list[str] | None
    handlers: list[str]
    concurrency: int
    running: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str


@dataclass(frozen=True)
class BatchesView:
    """The newest batches (of a tenant, in a status), with their statistics and continuations."""

    available: bool
    rows: list[BatchRecord] = field(default_factory=list)


class DashboardQueries:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store.db
        self._t = store.tables

    def _now(self) -> datetime:
        return self._store.clock()

    # -- filters -----------------------------------------------------------------

    def _where(self, f: JobFilter, now: datetime) -> list[ColumnElement[bool]]:
        jobs = self._t.jobs
        conditions = scope_conditions(jobs, handler=f.handler, queue=f.queue, tenant=f.tenant)
        if f.status is not None:
            conditions.append(status_condition(jobs, f.status, now))
        if f.batch is not None:
            conditions.append(jobs.c.batch_id == f.batch)
        if f.workflow is not None:
            conditions.append(jobs.c.workflow_id == f.workflow)
        if f.error is not None:
            conditions.append(jobs.c.error["type"].as_string() == f.error)
        if f.q is not None:
            # Keys and argument text have no index (one would cost every defer): they are
            # searched among the newest SEARCH_WINDOW jobs only, and the page says so.
            newest = select(func.max(jobs.c.id) - SEARCH_WINDOW).scalar_subquery()
            text_match = and_(
                jobs.c.id > func.coalesce(newest, 0),
                or_(jobs.c.key == f.q, func.lower(cast(jobs.c.args, Text)).contains(f.q.lower(), autoescape=True)),
            )
            if f.q.isdigit() and len(f.q) < 19:
                conditions.append(or_(jobs.c.id == int(f.q), text_match))
            else:
                conditions.append(text_match)
        return conditions

    # -- overview ----------------------------------------------------------------

    def overview(self) -> Overview:
        """Counts per (handler, queue), the last hour per minute, pauses, the table's size.

        Live jobs (waiting, blocked or running) are counted with their queue and run time.
        Settled failures (dead, failed, cancelled), which pile up until retention
        prunes them, are counted per handler from the ``(status, handler)`` index
        alone, without reading their rows, and shown on the row of the handler's
        own queue.
        """
        jobs, handlers = self._t.jobs, self._t.handlers
        now = self._now()
        hour_ago = now - timedelta(hours=1)
        due = jobs.c.run_at <= bindparam("now", now, type_=jobs.c.run_at.type)
        live = (
            select(
                jobs.c.handler,
                jobs.c.queue,
                jobs.c.status,
                due.label("due"),
                func.count().label("n"),
                func.min(jobs.c.run_at).label("oldest"),
            )
            .where(jobs.c.status.in_([s.value for s in (*CLAIMABLE_STATUSES, JobStatus.RUNNING, JobStatus.BLOCKED)]))
            .group_by(jobs.c.handler, jobs.c.queue, jobs.c.status, due)
        )
        settled = (
            select(jobs.c.status, jobs.c.handler, func.count().label("n"))
            .where(jobs.c.status.in_([s.value for s in SETTLED]))
            .group_by(jobs.c.status, jobs.c.handler)
        )
        minute = self._minute(jobs.c.finished_at)
        finished = (
            select(jobs.c.handler, jobs.c.queue, jobs.c.status, minute.label("minute"), func.count().label("n"))
            .where(
                jobs.c.status.in_(sorted(s.value for s in FINAL_STATUSES)),
                jobs.c.finished_at >= hour_ago,
            )
            .group_by(jobs.c.handler, jobs.c.queue, jobs.c.status, minute)
        )
        counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        oldest: dict[tuple[str, str], datetime] = {}
        series: dict[tuple[str, str], list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(60)])
        start = hour_ago.replace(second=0, microsecond=0)
        with self._db.engine.connect() as conn:
            home = {name: queue for name, queue in conn.execute(select(handlers.c.name, handlers.c.queue))}
            for name, queue in home.items():
                counts.setdefault((name, queue), defaultdict(int))
            for row in conn.execute(live):
                key = (row.handler, row.queue)
                status = shown_status(row.status, bool(row.due)).value
                counts[key][status] += int(row.n)
                waiting = status in (s.value for s in CLAIMABLE_STATUSES) and row.due
                if waiting and (key not in oldest or row.oldest < oldest[key]):
                    oldest[key] = row.oldest
            for row in conn.execute(settled):
                queue = home.get(row.handler) or next((q for h, q in counts if h == row.handler), "-")
                counts[(row.handler, queue)][row.status] += int(row.n)
            for row in conn.execute(finished):
                key = (row.handler, row.queue)
                index = self._minute_index(row.minute, start)
                if row.status == JobStatus.SUCCEEDED.value:
                    series[key][index][0] += int(row.n)
                elif row.status in (s.value for s in FAILED_FOR_GOOD):
                    series[key][index][1] += int(row.n)
            total, estimated = self._table_size(conn)
        paused = self._store.control.paused()
        keys = sorted(set(counts) | set(series))
        rows = []
        overall = [[0, 0] for _ in range(60)]
        for key in keys:
            per_minute = series.get(key, [[0, 0] for _ in range(60)])
            for i, (ok, bad) in enumerate(per_minute):
                overall[i][0] += ok
                overall[i][1] += bad
            rows.append(
                QueueRow(
                    handler=key[0],
                    queue=key[1],
                    counts=dict(counts.get(key, {})),
                    succeeded_last_hour=sum(ok for ok, _ in per_minute),
                    failed_last_hour=sum(bad for _, bad in per_minute),
                    oldest_waiting=oldest.get(key),
                    paused=("handler", key[0]) in paused,
                    series=[(ok, bad) for ok, bad in per_minute],
                )
            )
        totals: dict[str, int] = defaultdict(int)
        for row_counts in counts.values():
            for status, n in row_counts.items():
                totals[status] += n
        not_succeeded = sum(totals.values())
        totals[JobStatus.SUCCEEDED.value] = max(0, total - not_succeeded)
        return Overview(
            rows=rows,
            totals={s.value: totals.get(s.value, 0) for s in JobStatus},
            series=[(ok, bad) for ok, bad in overall],
            total_jobs=total,
            total_is_estimate=estimated,
            paused=paused,
            limits=handler_limits(self._store),
        )

    def _minute(self, column: Any) -> ColumnElement[Any]:
        return self._db.driver.minute_of(column)

    @staticmethod
    def _minute_index(value: Any, start: datetime) -> int:
        if isinstance(value, str):
            value = datetime.fromisoformat(value + ":00").replace(tzinfo=start.tzinfo)
        elif value.tzinfo is None:
            value = value.replace(tzinfo=start.tzinfo)
        index = int((value - start).total_seconds() // 60)
        return min(max(index, 0), 59)

    def _table_size(self, conn: Any) -> tuple[int, bool]:
        """Rows in the jobs table: PostgreSQL's estimate once counting would be slow."""
        jobs = self._t.jobs
        estimate = self._db.driver.estimated_rows(conn, self._t.qualified(jobs))
        if estimate is not None and estimate >= EXACT_COUNT_LIMIT:
            return estimate, True
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one()), False

    # -- jobs --------------------------------------------------------------------

    def jobs(self, f: JobFilter, *, before: int | None = None, limit: int = 50) -> JobPage:
        jobs = self._t.jobs
        now = self._now()
        stmt = select(
            jobs.c.id,
            jobs.c.handler,
            jobs.c.queue,
            jobs.c.status,
            jobs.c.attempts,
            jobs.c.tenant,
            jobs.c.key,
            jobs.c.run_at,
            jobs.c.created_at,
            jobs.c.finished_at,
            jobs.c.error["type"].as_string().label("error_type"),
        ).where(*self._where(f, now))
        if before is not None:
            stmt = stmt.where(jobs.c.id < before)
        stmt = stmt.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self._db.engine.connect() as conn:
            found = list(conn.execute(stmt))
        rows = [
            JobRow(
                id=int(r.id),
                handler=r.handler,
                queue=r.queue,
                status=effective_status(r.status, r.run_at, now),
                attempts=int(r.attempts),
                tenant=r.tenant,
                key=r.key,
                run_at=r.run_at,
                created_at=r.created_at,
                finished_at=r.finished_at,
                error_type=r.error_type,
            )
            for r in found[:limit]
        ]
        next_before = rows[-1].id if len(found) > limit else None
        return JobPage(rows, next_before)

    def _matching(self, f: JobFilter, statuses: Sequence[JobStatus], now: datetime) -> Select[Any]:
        jobs = self._t.jobs
        return select(jobs.c.id).where(*self._where(f, now), jobs.c.status.in_([s.value for s in statuses]))

    def count_matching(self, f: JobFilter, statuses: Sequence[JobStatus]) -> int:
        """How many jobs a bulk action on the filter would touch (shown before it runs)."""
        stmt = select(func.count()).select_from(self._matching(f, statuses, self._now()).subquery())
        with self._db.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def ids_matching(self, f: JobFilter, statuses: Sequence[JobStatus], *, chunk: int = 500) -> Iterator[list[int]]:
        """The matching ids, newest first, a chunk at a time (keyset: no long transaction)."""
        jobs = self._t.jobs
        before: int | None = None
        while True:
            stmt = self._matching(f, statuses, self._now())
            if before is not None:
                stmt = stmt.where(jobs.c.id < before)
            with self._db.engine.connect() as conn:
                ids = [int(i) for i in conn.execute(stmt.order_by(jobs.c.id.desc()).limit(chunk)).scalars()]
            if not ids:
                return
            yield ids
            before = ids[-1]

    def job(self, job_id: int) -> JobDetail | None:
        record = self._store.queries.get_job(job_id)
        if record is None:
            return None
        jobs = self._t.jobs
        with self._db.engine.connect() as conn:
            extra = conn.execute(
                select(jobs.c.cron_name, jobs.c.cron_fire_at, jobs.c.batch_id).where(jobs.c.id == job_id)
            ).first()
        return JobDetail(
            job=record,
            attempts=self._store.queries.attempts(job_id),
            cron_name=extra.cron_name if extra else None,
            cron_fire_at=extra.cron_fire_at if extra else None,
            batch_id=int(extra.batch_id) if extra and extra.batch_id is not None else None,
        )

    # -- failures ----------------------------------------------------------------

    def failures(self) -> list[FailureGroup]:
        """Failed and dead jobs grouped by error type and handler, biggest group first."""
        jobs = self._t.jobs
        error_type = func.coalesce(jobs.c.error["type"].as_string(), literal("(no error recorded)"))
        stmt = (
            select(
                error_type.label("error_type"),
                jobs.c.handler,
                jobs.c.status,
                func.count().label("n"),
                func.max(jobs.c.finished_at).label("last_at"),
                func.max(jobs.c.id).label("example_id"),
            )
            .where(jobs.c.status.in_([s.value for s in FAILED_FOR_GOOD]))
            .group_by(error_type, jobs.c.handler, jobs.c.status)
            .order_by(func.count().desc(), jobs.c.handler)
            .limit(SEARCH_LIMIT)
        )
        with self._db.engine.connect() as conn:
            groups = list(conn.execute(stmt))
            ids = [int(g.example_id) for g in groups]
            messages = {
                int(r.id): r.message or ""
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.error["message"].as_string().label("message")).where(jobs.c.id.in_(ids))
                )
            }
        return [
            FailureGroup(
                error_type=g.error_type,
                handler=g.handler,
                status=g.status,
                count=int(g.n),
                last_at=g.last_at,
                example_id=int(g.example_id),
                example_message=messages.get(int(g.example_id), ""),
            )
            for g in groups
        ]

    # -- crons, workers, batches -------------------------------------------------

    def crons(self) -> list[CronRecord]:
        return self._store.crons.list_crons()

    def workers(self) -> list[WorkerRow]:
        jobs, workers = self._t.jobs, self._t.workers
        with self._db.engine.connect() as conn:
            running = {
                owner: int(n)
                for owner, n in conn.execute(
                    select(jobs.c.lease_owner, func.count())
                    .where(jobs.c.status == JobStatus.RUNNING.value)
                    .group_by(jobs.c.lease_owner)
                )
            }
            rows = list(conn.execute(select(workers).order_by(workers.c.started_at.desc())).mappings())
        return [
            WorkerRow(
                id=r["id"],
                hostname=r["hostname"],
                pid=int(r["pid"]),
                queues=r["queues"],
                handlers=list(r["handlers"] or []),
                concurrency=int(r["concurrency"]),
                running=running.get(r["id"], 0),
                started_at=r["started_at"],
                heartbeat_at=r["heartbeat_at"],
            )
            for r in rows
        ]

    def batches(self, *, tenant: str | None = None, status: str | None = None, limit: int = 50) -> BatchesView:
        return BatchesView(
            available=True, rows=self._store.batches.list_batches(tenant=tenant, status=status, limit=limit)
        )

    def known_names(self) -> tuple[list[str], list[str]]:
        """Handler and queue names for the filter form's suggestions."""
        handlers = self._t.handlers
        with self._db.engine.connect() as conn:
            rows = list(conn.execute(select(handlers.c.name, handlers.c.queue).order_by(handlers.c.name)))
        return [r.name for r in rows], sorted({r.queue for r in rows})

    # -- audit -------------------------------------------------------------------

    def activity(self, *, before: int | None = None, limit: int = 100) -> tuple[list[AuditRow], int | None]:
        audit = self._t.audit
        stmt = select(audit)
        if before is not None:
            stmt = stmt.where(audit.c.id < before)
        with self._db.engine.connect() as conn:
            found = list(conn.execute(stmt.order_by(audit.c.id.desc()).limit(limit + 1)).mappings())
        rows = [
            AuditRow(
                id=int(r["id"]),
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                outcome=r["outcome"],
            )
            for r in found[:limit]
        ]
        return rows, (rows[-1].id if len(found) > limit else None)

    def workflow_status(self, workflow_id: int) -> str | None:
        """A workflow's status alone (one primary-key read, none of its steps), or None if there is none."""
        workflows = self._t.workflows
        with self._db.engine.connect() as conn:
            found = conn.execute(select(workflows.c.status).where(workflows.c.id == workflow_id)).scalar()
        return None if found is None else str(found)

    # -- live updates ------------------------------------------------------------

    def signature(self) -> tuple[Any, ...]:
        """Changes whenever anything a page shows changes; each part is one index look-up.

        The newest job, the newest finish, the newest audit row, the pauses,
        the newest cron change, the workers, and how many jobs run (for the
        Running page; counted in the ``jobs_active`` index). On PostgreSQL a
        NOTIFY covers defers at once.
        """
        jobs, audit, pauses, crons, workers = (
            self._t.jobs,
            self._t.audit,
            self._t.pauses,
            self._t.crons,
            self._t.workers,
        )
        finished = sorted(s.value for s in FINAL_STATUSES)
        stmt = select(
            select(func.max(jobs.c.id)).scalar_subquery(),
            select(func.max(jobs.c.finished_at)).where(jobs.c.status.in_(finished)).scalar_subquery(),
            select(func.max(audit.c.id)).scalar_subquery(),
            select(func.count()).select_from(pauses).scalar_subquery(),
            select(func.max(crons.c.updated_at)).scalar_subquery(),
            select(func.count()).select_from(workers).scalar_subquery(),
            select(func.count()).where(jobs.c.status == JobStatus.RUNNING.value).scalar_subquery(),
        )
        with self._db.engine.connect() as conn:
            return tuple(conn.execute(stmt).one())
