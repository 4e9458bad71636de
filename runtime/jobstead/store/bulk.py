"""Jobs chosen by a filter: listed, retried, cancelled or purged together.

One ``JobSelection`` picks the jobs for ``jobstead jobs list`` and for the
bulk commands (``jobs retry|cancel|purge --status ...``), so what a user lists
is exactly what the next command acts on. Statuses are the ones users see:
``queued`` includes ``scheduled`` jobs whose run time has come, as everywhere.

Bulk changes work in chunks of ids, each its own short, bounded transaction
through ``Control.apply`` (the same writer and batch settling as the one-job
operations), so a retry of 100,000 dead jobs never holds one long lock; every
change is still conditional on the status, so a job that moved on meanwhile is
left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from ..errors import InvalidState, JobNotFound
from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, JobStatus
from ..transitions import ASK_TO_STOP, CANCEL, PURGE, RETRY, RETRYABLE
from .batches import Batches
from .control import Control
from .database import Database
from .enqueue import Enqueuer
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
    control = Control(db, clock, batches)
    done = 0
    for chunk in _chunks(db, clock(), _only(selection, RETRYABLE)):
        try:
            done += len(control.apply((RETRY,), chunk))
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
    control = Control(db, clock, batches)
    wanted = set(selection.statuses) or {*CLAIMABLE_STATUSES, JobStatus.RUNNING}
    cancelled = asked = 0
    waiting = _only(selection, tuple(s for s in wanted if s in CANCEL.applies_to))
    for chunk in _chunks(db, clock(), waiting):
        cancelled += len(control.apply((CANCEL,), chunk))
    if JobStatus.RUNNING in wanted:
        for chunk in _chunks(db, clock(), _only(selection, (JobStatus.RUNNING,))):
            asked += len(control.apply((ASK_TO_STOP,), chunk))
    return CancelCount(cancelled=cancelled, asked_to_stop=asked)


def purge_jobs(
    db: Database,
    clock: Clock,
    selection: JobSelection,
    finished_before: datetime | None = None,
    *,
    batches: Batches | None = None,
) -> int:
    """Delete the selected finished jobs (and their attempts); live jobs are never purged.

    Members of a batch that is still active are kept: its statistics are a
    count of its members (``transitions.PURGE``).
    """
    if batches is None:  # a purge settles no batch (``PURGE``); the writer still wants one at hand
        batches = Batches(db, clock, Enqueuer(db, clock))
    control = Control(db, clock, batches)
    final = _only(selection, tuple(FINAL_STATUSES))
    return sum(len(control.apply((PURGE,), chunk)) for chunk in _chunks(db, clock(), final, finished_before))


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
