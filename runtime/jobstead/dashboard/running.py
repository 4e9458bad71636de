"""What runs right now: the running jobs with their worker and start time, and each worker's jobs.

Running jobs are few (bounded by the workers' slots) and sit in the
``jobs_active`` index, so listing them all is cheap at any table size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..status import JobStatus
from ..store import Store
from .listing import preview

#: Running jobs listed on one page (a fleet rarely runs more at once).
RUNNING_LIMIT = 500


@dataclass(frozen=True)
class RunningJob:
    id: int
    handler: str
    queue: str
    worker: str | None
    started_at: datetime | None
    attempts: int
    tenant: str | None
    args_preview: str
    cancel_requested: bool


def running_jobs(store: Store, *, limit: int = RUNNING_LIMIT) -> list[RunningJob]:
    """Every running job, the longest-running first."""
    jobs = store.tables.jobs
    stmt = (
        select(
            jobs.c.id,
            jobs.c.handler,
            jobs.c.queue,
            jobs.c.lease_owner,
            jobs.c.started_at,
            jobs.c.attempts,
            jobs.c.tenant,
            jobs.c.args,
            jobs.c.cancel_requested,
        )
        .where(jobs.c.status == JobStatus.RUNNING.value)
        .order_by(jobs.c.started_at, jobs.c.id)
        .limit(limit)
    )
    with store.db.engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [
        RunningJob(
            id=int(r.id),
            handler=r.handler,
            queue=r.queue,
            worker=r.lease_owner,
            started_at=r.started_at,
            attempts=int(r.attempts),
            tenant=r.tenant,
            args_preview=preview(r.args),
            cancel_requested=bool(r.cancel_requested),
        )
        for r in rows
    ]


def jobs_by_worker(store: Store) -> dict[str, list[tuple[int, str]]]:
    """(job id, handler) of each worker's running jobs, oldest first."""
    jobs = store.tables.jobs
    stmt = (
        select(jobs.c.lease_owner, jobs.c.id, jobs.c.handler)
        .where(jobs.c.status == JobStatus.RUNNING.value)
        .order_by(jobs.c.started_at, jobs.c.id)
        .limit(RUNNING_LIMIT)
    )
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with store.db.engine.connect() as conn:
        for owner, job_id, handler in conn.execute(stmt):
            if owner is not None:
                found[owner].append((int(job_id), handler))
    return dict(found)
