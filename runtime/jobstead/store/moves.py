"""The one writer of a ``JobChange`` (cancel, ask to stop, retry, delete, purge): one job or many.

``transitions`` decides what each change is; this writes it to the rows a
condition names, and then does what the change means for the jobs' batches
and workflows, and for the workers running them (``notify_cancel``), in the
caller's transaction. ``Control`` (one job), ``bulk`` (a filter, in chunks),
``Batches.cancel`` (a batch's members) and ``Workflows.cancel`` (a
workflow's steps) all come through here, so a change is written the same way
whichever door it came in by.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, delete, or_, select, update

from ..errors import JobError
from ..status import JobStatus
from ..transitions import BatchEffect, JobChange
from .drivers.base import CANCEL_PREFIX
from .records import JobRecord
from .rows import job_record

if TYPE_CHECKING:
    from .batches import Batches
    from .database import Database
    from .workflows import Workflows

#: Ids per cancel notification (PostgreSQL payloads stop at 8000 bytes).
CANCEL_IDS_PER_NOTE = 500


@dataclass(frozen=True)
class Moved:
    """One job a change applied to: the row after it (as it was, for a delete), and its status before."""

    change: JobChange
    record: JobRecord
    previous: JobStatus


def apply_change(
    db: Database,
    conn: Connection,
    change: JobChange,
    which: ColumnElement[bool],
    now: datetime,
    *,
    skip_locked: bool = False,
) -> list[Moved]:
    """Write ``change`` to the rows ``which`` names that it applies to, in ``conn``'s transaction.

    The rows are read and locked first (in id order, the order completions and
    renewals lock in), so the status each had before is known and nobody
    changes them in between; the write is still conditional on the status. No
    ``RETURNING`` is needed (MySQL has none on UPDATE and DELETE): a deleted
    row is as it was read, an updated one is read back. ``skip_locked``: rows
    another transaction holds (a completion writing them) are left out.
    """
    jobs = db.tables.jobs
    applies = jobs.c.status.in_(sorted(s.value for s in change.applies_to))
    conditions = [which, applies]
    if change.spares_active_batches:
        batches, workflows = db.tables.batches, db.tables.workflows
        active = select(batches.c.id).where(batches.c.status == "active").scalar_subquery()
        conditions.append(or_(jobs.c.batch_id.is_(None), jobs.c.batch_id.not_in(active)))
        # A workflow's jobs likewise, while it runs: its steps' results are its dependents' inputs.
        running = select(workflows.c.id).where(workflows.c.status == "active").scalar_subquery()
        conditions.append(or_(jobs.c.workflow_id.is_(None), jobs.c.workflow_id.not_in(running)))
    locked = select(jobs).where(*conditions).order_by(jobs.c.id).with_for_update(of=jobs, skip_locked=skip_locked)
    found = conn.execute(locked).mappings().all()
    if not found:
        return []
    previous = {int(r["id"]): JobStatus(r["status"]) for r in found}
    chosen = jobs.c.id.in_(sorted(previous))
    if change.deletes:
        conn.execute(delete(jobs).where(chosen, applies))
        rows = found
    else:
        conn.execute(update(jobs).where(chosen, applies).values(_values(db, change, now)))
        # Rarely any: steps cancelled for a reason (rows locked above), made live again.
        forgotten = [int(r["id"]) for r in found if change.forgets(JobError.from_json(r["error"]))]
        if forgotten:
            conn.execute(update(jobs).where(jobs.c.id.in_(forgotten)).values(error=None))
        rows = conn.execute(select(jobs).where(chosen).order_by(jobs.c.id)).mappings().all()
    return [Moved(change, job_record(r, now), previous[int(r["id"])]) for r in rows]


def _values(db: Database, change: JobChange, now: datetime) -> dict[str, Any]:
    jobs = db.tables.jobs
    values: dict[str, Any] = {}
    if change.becomes is not None:
        values["status"] = change.becomes.value
    if change.ends:
        values["finished_at"] = now
    elif change.revives:
        values["finished_at"] = None
    if change.cancel_requested is not None:
        values["cancel_requested"] = change.cancel_requested
    if change.reason is not None:
        values["error"] = change.reason.to_json()
    if change.one_more_attempt:
        values["max_attempts"] = jobs.c.attempts + 1
        values["run_at"] = now
    return values


def follow(
    db: Database, conn: Connection, batches: Batches, moved: Sequence[Moved], workflows: Workflows | None = None
) -> None:
    """What the moves mean beyond their rows, in the same transaction: workers told, batches and
    workflows settled (every door a change comes in by passes this point).

    ``workflows`` may be left out only by callers that move no workflow step (a batch's members).
    """
    notify_cancel(db, conn, [m.record.id for m in moved if m.change.tells_workers])
    settle = {m.record.batch_id for m in moved if m.record.batch_id is not None and m.change.settles_batch(m.previous)}
    if settle:
        batches.settle(conn, settle)
    # A member (not a continuation) live again reopens its batch; fired continuations stay fired.
    reopen = {
        m.record.batch_id
        for m in moved
        if m.record.batch_id is not None and m.record.batch_event is None and m.change.batch is BatchEffect.REOPEN
    }
    if reopen:
        batches.reopen(conn, reopen)
    if workflows is not None and any(m.record.workflow_id is not None for m in moved):
        workflows.follow(conn, moved)


def notify_cancel(db: Database, conn: Connection, job_ids: Collection[int]) -> None:
    """Tell listening workers, at commit, to stop these running jobs now (not at their next renewal)."""
    ids = sorted(job_ids)
    payloads = [
        CANCEL_PREFIX + ",".join(str(i) for i in ids[start : start + CANCEL_IDS_PER_NOTE])
        for start in range(0, len(ids), CANCEL_IDS_PER_NOTE)
    ]
    if payloads:
        db.driver.notify(conn, db.tables.notify_channel, payloads)
