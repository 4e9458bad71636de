"""Jobs chosen by a filter: listed, retried, cancelled or purged together.

One ``JobSelection`` picks the jobs for ``jobstead jobs list`` and for the
bulk commands (``jobs retry|cancel|purge --status ...``), so what a user lists
is exactly what the next command acts on. Statuses are the ones users see:
``queued`` includes ``scheduled`` jobs whose run time has come, as everywhere.

Bulk changes work in chunks of ids, each its own short transaction, so a
retry of 100,000 dead jobs never holds one long lock; every change is still
conditional on the status, so a job that moved on meanwhile is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from ..errors import InvalidState, JobNotFound
from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, JobStatus
from .batches import Batches
from .control import RETRYABLE, Control
from .database import Database
from .queries import scope_conditions, status_condition
from .records import JobRecord
from .rows import job_record

CHUNK = 500
SortKey = Literal["id", "created_at", "run_at", "started_at", "finished_at", "priority", "attempts"]
SORT_KEYS: tuple[SortKey, ...] = ("id", "created_at", "run_at", "started_at", "finished_at", "priority", "attempts")


@dataclass(frozen=True)
class JobSelection:
    """Which jobs: every given field must match (``statuses``: any of them); ``since``: created at or after."""

    statuses: tuple[JobStatus, ...] = ()
    handler: str | None = None
    queue: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    ids: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class CancelCount:
    cancelled: int
    asked_to_stop: int


def find_jobs(
    db: Database,
    now: datetime,
    selection: JobSelection,
    *,
    limit: int = 100,
    offset: int = 0,
    sort: SortKey = "id",
    descending: bool = True,
) -> list[JobRecord]:
    jobs = db.tables.jobs
    column = jobs.c[sort]
    order = [column.desc() if descending else column.asc()]
    if sort != "id":
        order.append(jobs.c.id.desc() if descending else jobs.c.id.asc())  # a stable order for --offset
    stmt = select(jobs).where(*_conditions(db, now, selection)).order_by(*order).limit(limit).offset(offset)
    with db.engine.connect() as conn:
        return [job_record(row, now) for row in conn.execute(stmt).mappings()]


def retry_jobs(db: Database, clock: Clock, selection: JobSelection, *, batches: Batches) -> int:
    """Queue again every selected dead, failed or cancelled job, each with one more attempt.

    A job whose deduplication key a live job holds now cannot be retried; it is
    skipped (the chunk falls back to one job at a time to find it).
    """
    retryable = _only(selection, RETRYABLE)
    jobs = db.tables.jobs
    control = Control(db, clock, batches)
    done = 0
    for chunk in _chunks(db, clock(), retryable):
        now = clock()
        try:
            with db.engine.begin() as conn:
                retried = db.driver.execute_update(
                    conn,
                    update(jobs)
                    .where(jobs.c.id.in_(chunk), jobs.c.status.in_([s.value for s in RETRYABLE]))
                    .values(
                        status=JobStatus.QUEUED.value,
                        run_at=now,
                        finished_at=None,
                        max_attempts=jobs.c.attempts + 1,
                        cancel_requested=False,
                    )
                    .returning(jobs.c.batch_id, jobs.c.batch_event),
                ).all()
                done += len(retried)
                # A member retried from dead reopens its batch; fired continuations stay fired.
                batches.reopen(conn, [b for b, event in retried if b is not None and event is None])
        except IntegrityError:
            for job_id in chunk:
                try:
                    control.retry(job_id)
                    done += 1
                except (InvalidState, JobNotFound):
                    continue
    return done


def cancel_jobs(db: Database, clock: Clock, selection: JobSelection, *, batches: Batches) -> CancelCount:
    """Cancel the selected waiting jobs at once; ask the selected running ones to stop."""
    jobs = db.tables.jobs
    wanted = set(selection.statuses) or {*CLAIMABLE_STATUSES, JobStatus.RUNNING}
    cancelled = asked = 0
    waiting = _only(selection, tuple(s for s in wanted if s in CLAIMABLE_STATUSES))
    if waiting.statuses:
        for chunk in _chunks(db, clock(), waiting):
            with db.engine.begin() as conn:
                ended = (
                    db.driver.execute_update(
                        conn,
                        update(jobs)
                        .where(jobs.c.id.in_(chunk), jobs.c.status.in_([s.value for s in CLAIMABLE_STATUSES]))
                        .values(status=JobStatus.CANCELLED.value, finished_at=clock())
                        .returning(jobs.c.batch_id),
                    )
                    .scalars()
                    .all()
                )
                cancelled += len(ended)
                batches.settle(conn, [b for b in ended if b is not None])
    if JobStatus.RUNNING in wanted:
        running = _only(selection, (JobStatus.RUNNING,))
        for chunk in _chunks(db, clock(), running):
            with db.engine.begin() as conn:
                stopping = (
                    db.driver.execute_update(
                        conn,
                        update(jobs)
                        .where(jobs.c.id.in_(chunk), jobs.c.status == JobStatus.RUNNING.value)
                        .values(cancel_requested=True)
                        .returning(jobs.c.id),
                    )
                    .scalars()
                    .all()
                )
                asked += len(stopping)
                batches.notify_cancel(conn, [int(i) for i in stopping])  # workers stop them now
    return CancelCount(cancelled=cancelled, asked_to_stop=asked)


def purge_jobs(db: Database, clock: Clock, selection: JobSelection, finished_before: datetime | None = None) -> int:
    """Delete the selected finished jobs (and their attempts); live jobs are never purged.

    Members of a batch that is still active are kept: its statistics are a
    count of its members.
    """
    jobs = db.tables.jobs
    final = _only(selection, tuple(FINAL_STATUSES))
    deleted = 0
    for chunk in _chunks(db, clock(), final, finished_before):
        with db.engine.begin() as conn:
            active = select(db.tables.batches.c.id).where(db.tables.batches.c.status == "active")
            deleted += conn.execute(
                delete(jobs).where(
                    jobs.c.id.in_(chunk),
                    jobs.c.status.in_([s.value for s in FINAL_STATUSES]),
                    or_(jobs.c.batch_id.is_(None), jobs.c.batch_id.not_in(active.scalar_subquery())),
                )
            ).rowcount
    return deleted


def _only(selection: JobSelection, allowed: Sequence[JobStatus]) -> JobSelection:
    chosen = tuple(s for s in selection.statuses if s in allowed) if selection.statuses else tuple(allowed)
    return JobSelection(
        statuses=chosen,
        handler=selection.handler,
        queue=selection.queue,
        tenant=selection.tenant,
        since=selection.since,
        ids=selection.ids,
    )


def _chunks(
    db: Database, now: datetime, selection: JobSelection, finished_before: datetime | None = None
) -> list[list[int]]:
    """The ids selected now, in chunks; an empty status list selects nothing."""
    if not selection.statuses:
        return []
    jobs = db.tables.jobs
    conditions = _conditions(db, now, selection)
    if finished_before is not None:
        conditions.append(jobs.c.finished_at < finished_before)
    with db.engine.connect() as conn:
        ids = list(conn.execute(select(jobs.c.id).where(*conditions).order_by(jobs.c.id)).scalars())
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def _conditions(db: Database, now: datetime, selection: JobSelection) -> list[ColumnElement[bool]]:
    jobs = db.tables.jobs
    conditions = scope_conditions(jobs, handler=selection.handler, queue=selection.queue, tenant=selection.tenant)
    if selection.statuses:
        conditions.append(or_(*(status_condition(jobs, s, now) for s in selection.statuses)))
    if selection.since is not None:
        conditions.append(jobs.c.created_at >= selection.since)
    if selection.ids:
        conditions.append(jobs.c.id.in_(selection.ids))
    return conditions
