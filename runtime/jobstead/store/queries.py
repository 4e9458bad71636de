"""The read side: one job, filtered lists, attempt logs, counts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select

from ..clock import Clock, as_utc
from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, AttemptOutcome, JobStatus
from ..transitions import shown_status
from .crons import _record as cron_record
from .database import Database
from .ids import lookup_id
from .limits import limit_use
from .records import AttemptRecord, CronRecord, JobRecord, LimitUse, Stats
from .rows import attempt_record, job_record


def status_condition(jobs: Table, status: JobStatus, now: object) -> ColumnElement[bool]:
    """Jobs shown in ``status``: the stored column and the shown status differ for due ``scheduled`` jobs.

    ``transitions.shown_status`` as a condition: the one definition every list
    uses (queries, bulk selections, the dashboard).
    """
    if status is JobStatus.QUEUED:
        return or_(
            jobs.c.status == JobStatus.QUEUED.value,
            and_(jobs.c.status == JobStatus.SCHEDULED.value, jobs.c.run_at <= now),
        )
    if status is JobStatus.SCHEDULED:
        return and_(jobs.c.status == JobStatus.SCHEDULED.value, jobs.c.run_at > now)
    return jobs.c.status == status.value


def scope_conditions(
    jobs: Table, *, handler: str | None, queue: str | None, tenant: str | None
) -> list[ColumnElement[bool]]:
    """The handler, queue and tenant a job list is narrowed to: each one given must match.

    Shared by every list (queries, bulk selections, the dashboard) so a new scope
    field is added in one place.
    """
    scope = ((jobs.c.handler, handler), (jobs.c.queue, queue), (jobs.c.tenant, tenant))
    return [column == value for column, value in scope if value is not None]


@dataclass(frozen=True)
class HandlerLoad:
    """What an autoscaler needs to know about one handler, right now."""

    due: int
    running: int
    failed: int


@dataclass(frozen=True)
class RunTime:
    """How long one handler's attempts take lately: what sizes the pods a rate can keep busy.

    ``finished`` says what the mean is of: attempts that ended within the
    window, or, while none did, the running ones' time so far (a lower bound
    that grows as they run).
    """

    mean_seconds: float | None
    attempts: int
    finished: bool


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    handler: str | None = None
    queue: str | None = None
    tenant: str | None = None
    limit: int = 100
    offset: int = 0


class Queries:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job ``job_id``, or None; an id that is no whole number is ``InvalidArguments`` (``ids.lookup_id``)."""
        jobs = self._db.tables.jobs
        looked_up = lookup_id(job_id, "job")
        if looked_up is None:
            return None
        with self._db.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == looked_up)).mappings().first()
        return job_record(row, self._clock()) if row else None

    def list_jobs(self, where: JobFilter = JobFilter()) -> list[JobRecord]:
        jobs = self._db.tables.jobs
        now = self._clock()
        conditions = scope_conditions(jobs, handler=where.handler, queue=where.queue, tenant=where.tenant)
        if where.status is not None:
            conditions.append(status_condition(jobs, where.status, now))
        stmt = select(jobs).where(*conditions).order_by(jobs.c.id.desc()).limit(where.limit).offset(where.offset)
        with self._db.engine.connect() as conn:
            return [job_record(row, now) for row in conn.execute(stmt).mappings()]

    def handler_load(self, handler: str) -> HandlerLoad:
        """Due, running and failed-for-good counts of one handler.

        Cheap enough to run every few seconds on a table with millions of
        finished jobs: one scan of the ``(status, handler)`` index over the six
        statuses counted, which holds no succeeded row.
        """
        jobs = self._db.tables.jobs
        now = self._clock()
        claimable = [s.value for s in CLAIMABLE_STATUSES]
        finished_badly = [JobStatus.DEAD.value, JobStatus.FAILED.value]
        due = jobs.c.run_at <= now
        stmt = (
            select(jobs.c.status, due.label("due"), func.count())
            .where(jobs.c.status.in_([*claimable, JobStatus.RUNNING.value, *finished_badly]), jobs.c.handler == handler)
            .group_by(jobs.c.status, due)
        )
        with self._db.engine.connect() as conn:
            counts: dict[str, int] = {}
            for status, is_due, n in conn.execute(stmt):
                if status in claimable and not is_due:
                    continue  # not due yet: an autoscaler must not count it
                counts[status] = counts.get(status, 0) + int(n)
        return HandlerLoad(
            due=sum(counts.get(s, 0) for s in claimable),
            running=counts.get(JobStatus.RUNNING.value, 0),
            failed=sum(counts.get(s, 0) for s in finished_badly),
        )

    def recent_run_time(
        self, handler: str, *, within: timedelta = timedelta(minutes=10), sample: int = 100, scan: int = 10_000
    ) -> RunTime:
        """The mean run time of the handler's last ``sample`` attempts that ended within ``within``.

        Read from the job rows (a job's row holds its last attempt) among the
        newest ``scan`` jobs that ended, of any handler: a bounded walk down
        the finished jobs' index however busy the table is (no index leads
        with the handler there). The mean is taken here, not in SQL, where a
        difference of two timestamps is written differently on every
        database. While none ended (or none among the ``scan`` newest), the
        running jobs' time so far stands in for it.
        """
        jobs = self._db.tables.jobs
        now = self._clock()
        newest = (
            select(jobs.c.handler, jobs.c.started_at, jobs.c.finished_at)
            .where(jobs.c.status.in_([s.value for s in sorted(FINAL_STATUSES)]), jobs.c.finished_at >= now - within)
            .order_by(jobs.c.finished_at.desc())
            .limit(scan)
            .subquery("newest")
        )
        ended = (
            select(newest.c.started_at, newest.c.finished_at)
            .where(newest.c.handler == handler, newest.c.started_at.is_not(None))
            .order_by(newest.c.finished_at.desc())
            .limit(sample)
        )
        running = (
            select(jobs.c.started_at)
            .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.handler == handler, jobs.c.started_at.is_not(None))
            .limit(sample)
        )
        with self._db.engine.connect() as conn:
            spans = [
                (as_utc(finished) - as_utc(started)).total_seconds() for started, finished in conn.execute(ended).all()
            ]
            finished = bool(spans)
            if not finished:
                spans = [(now - as_utc(started)).total_seconds() for (started,) in conn.execute(running).all()]
        spans = [max(0.0, span) for span in spans]
        return RunTime(sum(spans) / len(spans) if spans else None, len(spans), finished)

    def attempts(self, job_id: int) -> list[AttemptRecord]:
        """Every attempt of the job, oldest first.

        A successful attempt has no row in ``attempts``: the job row holds it
        (see ``Leases``), and it is the last one.
        """
        attempts, jobs = self._db.tables.attempts, self._db.tables.jobs
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.finished_at, attempts.c.id)
            ).mappings()
            log = [attempt_record(r) for r in rows]
            job = conn.execute(
                select(jobs.c.attempts, jobs.c.lease_owner, jobs.c.started_at, jobs.c.finished_at).where(
                    jobs.c.id == job_id, jobs.c.status == JobStatus.SUCCEEDED.value
                )
            ).first()
        # Rows written before successes were kept in the job row carry their own. Compare the
        # outcome too: a released attempt (graceful shutdown) shares the number of the next one.
        logged_success = (
            any(a.attempt == job.attempts and a.outcome is AttemptOutcome.SUCCEEDED for a in log) if job else False
        )
        if job is not None and job.finished_at is not None and not logged_success:
            log.append(
                AttemptRecord(
                    attempt=int(job.attempts),
                    worker_id=job.lease_owner,
                    started_at=job.started_at,
                    finished_at=job.finished_at,
                    outcome=AttemptOutcome.SUCCEEDED,
                    error=None,
                )
            )
        return log

    def metrics_snapshot(self, alive_within: timedelta = timedelta(seconds=60)) -> MetricsSnapshot:
        """The database-wide gauges: counts over the unfinished-or-failed index, no scan of successes."""
        t = self._db.tables
        jobs = t.jobs
        now = self._clock()
        with self._db.engine.connect() as conn:
            counts: dict[tuple[str, str, str], int] = {}
            # A due ``scheduled`` job shows as queued, as everywhere; one named parameter in both
            # places, so PostgreSQL sees the same grouping expression.
            due = jobs.c.run_at <= bindparam("now", now, type_=jobs.c.run_at.type)
            for handler, queue, status, is_due, n in conn.execute(
                select(jobs.c.handler, jobs.c.queue, jobs.c.status, due, func.count())
                .where(jobs.c.status != JobStatus.SUCCEEDED.value)
                .group_by(jobs.c.handler, jobs.c.queue, jobs.c.status, due)
            ).all():
                key = (handler, queue, shown_status(status, bool(is_due)).value)
                counts[key] = counts.get(key, 0) + int(n)
            oldest = {
                (handler, queue): as_utc(run_at)
                for handler, queue, run_at in conn.execute(
                    select(jobs.c.handler, jobs.c.queue, func.min(jobs.c.run_at))
                    .where(
                        jobs.c.status.in_([s.value for s in CLAIMABLE_STATUSES]),
                        jobs.c.run_at <= bindparam("now", now, type_=jobs.c.run_at.type),
                    )
                    .group_by(jobs.c.handler, jobs.c.queue)
                ).all()
                if run_at is not None
            }
            workers = int(
                conn.execute(
                    select(func.count()).where(t.workers.c.heartbeat_at >= now - alive_within).select_from(t.workers)
                ).scalar_one()
            )
            limits = {
                name: int(limit)
                for name, limit in conn.execute(
                    select(t.handlers.c.name, t.handlers.c.concurrency).where(t.handlers.c.concurrency.is_not(None))
                ).all()
            }
            crons = [cron_record(row) for row in conn.execute(select(t.crons)).mappings()]
            batches = {
                (tenant, status): int(n)
                for tenant, status, n in conn.execute(
                    select(t.batches.c.tenant, t.batches.c.status, func.count()).group_by(
                        t.batches.c.tenant, t.batches.c.status
                    )
                ).all()
            }
            flow = limit_use(conn, t, now)
        return MetricsSnapshot(now, counts, oldest, workers, limits, crons, batches, flow)

    def stats(self, tenant: str | None = None) -> Stats:
        """Counts of jobs per status, overall and per handler, queue and tenant."""
        jobs = self._db.tables.jobs
        now = self._clock()
        # One named parameter in both places, so PostgreSQL sees the same expression.
        due = jobs.c.run_at <= bindparam("now", now, type_=jobs.c.run_at.type)
        stmt = select(
            jobs.c.handler,
            jobs.c.queue,
            jobs.c.tenant,
            jobs.c.status,
            due.label("due"),
            func.count().label("n"),
        ).group_by(jobs.c.handler, jobs.c.queue, jobs.c.tenant, jobs.c.status, due)
        if tenant is not None:
            stmt = stmt.where(jobs.c.tenant == tenant)
        by_status: dict[str, int] = defaultdict(int)
        by_handler: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_queue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_tenant: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with self._db.engine.connect() as conn:
            for row in conn.execute(stmt):
                status = shown_status(row.status, bool(row.due)).value
                by_status[status] += row.n
                by_handler[row.handler][status] += row.n
                by_queue[row.queue][status] += row.n
                if row.tenant is not None:
                    by_tenant[row.tenant][status] += row.n
        return Stats(
            by_status={s.value: by_status.get(s.value, 0) for s in JobStatus},
            by_handler={k: dict(v) for k, v in sorted(by_handler.items())},
            by_queue={k: dict(v) for k, v in sorted(by_queue.items())},
            by_tenant={k: dict(v) for k, v in sorted(by_tenant.items())},
        )


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the database-wide gauges show, read in one short transaction."""

    now: datetime
    #: (handler, queue, status) -> jobs, for every status but succeeded.
    counts: dict[tuple[str, str, str], int]
    #: (handler, queue) -> run_at of the oldest job that could run now.
    oldest_ready: dict[tuple[str, str], datetime]
    workers: int
    limits: dict[str, int]
    crons: list[CronRecord]
    #: (tenant, status) -> batches.
    batches: dict[tuple[str | None, str], int]
    #: Each limit and how much of it is in use (``limits.limit_use``, as ``jobstead stats`` shows them).
    flow: list[LimitUse] = field(default_factory=list)
