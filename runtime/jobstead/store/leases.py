"""Everything a worker does to a job it holds, each step conditional on its lease.

A lease is the pair (``lease_owner``, ``attempts``): the worker's id is unique
per process start and ``attempts`` grows with every claim, so the pair names one
claim and nothing else. Every write here matches on it (compare-and-set). A
worker that lost its lease (it stalled, the job was rescued and claimed again)
therefore cannot complete, fail or checkpoint a job that now belongs to someone
else; its write simply matches no row.

Nothing here may leave a job row locked while its worker is frozen (SIGSTOP, a
VM or GC pause): the rescuer skips locked rows, so such a lock would keep the
job from ever being rescued. Renewals and checkpoints are single statements,
committed as they run (``Driver.alone``); the transactions of several
statements are ended by the server if their client falls silent
(``Driver.bound_locks``).

Every attempt is recorded, but a successful one needs no row of its own: it is
a job's last attempt, and the job row already holds its start, end and worker
(``lease_owner`` stays set on success). ``Queries.attempts`` puts it back into
the log. That spares one row and two index entries for most jobs. Failed,
timed-out, cancelled, lost and released attempts get a row in ``attempts``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, insert, select, true, update

from ..clock import Clock
from ..errors import JobError
from ..status import JobStatus
from ..transitions import JobsteadErrorType, lease_lost, released
from .batches import Batches
from .claims import Claims
from .database import Database
from .drivers.base import Applied
from .records import ClaimedJob, Completion, EffectiveSettings, LeaseReport
from .workflows import Workflows

#: What a lost attempt's error says, by why it was lost.
_LOST_MESSAGES = {
    JobsteadErrorType.LEASE_EXPIRED: "worker {owner} stopped renewing its lease (crashed or stalled)",
    JobsteadErrorType.WORKER_GONE: "worker {owner} ran in pod {host}, which is gone",
}

T = TypeVar("T")

#: Ids per renewal statement: under every database's limit on a statement's parameters.
RENEWAL_CHUNK = 10_000


@dataclass
class HandOff:
    """A claim to make in a completion's transaction (``Leases.complete``): what ``Claims.claim`` takes.

    A worker whose handlers have a global limit asks for one with each batch of
    completions: the slots its finished jobs held go to its next jobs in the
    same commit, one transaction per job instead of a completion plus a claim,
    and no other claimer has to find them free first. ``claimed``: what it took.

    A worker whose finished jobs are workflow steps asks for one too: the steps
    they release are claimed by it at once, and wake no other worker
    (``Workflows.wake``). ``if_released``: asked for that alone, so not made
    (``made`` stays False) where the write released no step.
    """

    worker_id: str
    handlers: Sequence[str]
    queues: Sequence[str] | None
    limit: int
    lease_seconds: float
    if_released: bool = False
    #: Whether workflow steps end with these completions: the claim then follows what they release.
    ends_steps: bool = False
    claimed: list[ClaimedJob] = field(default_factory=list)
    made: bool = False
    #: Completions committed with the claim in a transaction of their own (``Driver.complete_alone_then``):
    #: written even if the write of the others (in a batch or a workflow) then failed.
    written: set[int] = field(default_factory=set)


def _asked_by(hand_off: HandOff, how: Callable[..., T]) -> T:
    """``how`` (a claim, or its statement) called with what ``hand_off`` asks for."""
    return how(
        worker_id=hand_off.worker_id,
        handlers=hand_off.handlers,
        queues=hand_off.queues,
        limit=hand_off.limit,
        lease_seconds=hand_off.lease_seconds,
    )


class Leases:
    def __init__(self, db: Database, clock: Clock, batches: Batches, workflows: Workflows, claims: Claims) -> None:
        self._db = db
        self._clock = clock
        self._batches = batches
        self._workflows = workflows
        self._claims = claims

    def _held(self, job_id: int, owner: str, attempt: int) -> Any:
        jobs = self._db.tables.jobs
        return and_(
            jobs.c.id == job_id,
            jobs.c.lease_owner == owner,
            jobs.c.attempts == attempt,
            jobs.c.status == JobStatus.RUNNING.value,
        )

    def complete(self, completions: Sequence[Completion], hand_off: HandOff | None = None) -> set[int]:
        """Apply finished attempts in one transaction; return the ids whose lease was gone.

        What each row becomes is stated by the ``Completion`` (``decide`` made
        it); the driver only writes it, in one statement on PostgreSQL. With a
        ``hand_off``, its claim is made in the same transaction, after the
        writes (``Claims.claim_in``), and what it took is in ``hand_off.claimed``
        once this returns; if the transaction fails, neither happened. The
        workers of the steps the writes released are woken only for those the
        claim did not take.

        Where the claim is one statement, the writes of jobs in no batch and no
        workflow and the claim are one transaction of their own, one round trip
        (``_claimed_alone_with_writes``), and the others are written after it as
        above: if that fails, the first is committed all the same
        (``hand_off.made``, ``hand_off.written``).
        """
        if not completions:
            return set()
        # In id order, the order a renewal locks the same rows in (through the primary key):
        # in finishing order, a completion and a renewal of overlapping rows could each hold
        # a row the other waits for, and the server aborted one of them as a deadlock.
        completions = sorted(completions, key=lambda c: c.job_id)
        if hand_off is not None:
            alone = self._claimed_alone_with_writes(completions, hand_off)
            if alone is not None:
                hand_off.made, hand_off.written = True, alone  # committed, whatever happens next
                rest = [c for c in completions if c.job_id not in alone]
                # In a batch or a workflow (settled in their own transaction), or their lease gone.
                return self.complete(rest) if rest else set()
        with self._workflows.counted(self._db.engine.begin()) as conn:
            applied, released = self._write(conn, completions)
            claimed: list[ClaimedJob] = []
            made = hand_off is not None and (bool(released) or not hand_off.if_released)
            if hand_off is not None and made:
                claimed = _asked_by(hand_off, partial(self._claims.claim_in, conn))
            self._workflows.wake(conn, released, {job.id for job in claimed})
        if hand_off is not None:
            hand_off.claimed, hand_off.made = claimed, made  # committed
        return {c.job_id for c in completions} - applied.batches.keys()

    def _claimed_alone_with_writes(self, completions: Sequence[Completion], hand_off: HandOff) -> set[int] | None:
        """The writes of jobs in no batch and no workflow and a hand-off's claim, in one transaction of
        their own sent in one round trip (``Driver.complete_alone_then``), where the claim is one
        statement (``Claims.hand_off_statement``); the ids written (None: not sent that way), the
        claimed jobs in ``hand_off.claimed``.

        Not where workflow steps end (the claim follows what they release, to take those steps
        too), nor for steps added at run time (judged before the writes). A claim that found
        something in its way took nothing: the full claim is made at once, in a transaction of
        its own, so the slots freed do not wait for the next poll.
        """
        if hand_off.if_released or hand_off.ends_steps or any(c.growth is not None for c in completions):
            return None
        claim = _asked_by(hand_off, self._claims.hand_off_statement)
        if claim is None:
            return None
        sent = self._db.driver.complete_alone_then(self._db, completions, *claim)
        if sent is None:
            return None
        written, rows = sent
        claimed = self._claims.hand_off_found(hand_off.handlers, hand_off.queues, rows)
        if claimed is None:
            claimed = _asked_by(hand_off, self._claims.claim)
        hand_off.claimed = claimed
        return written

    def _write(self, conn: Connection, completions: Sequence[Completion]) -> tuple[Applied, dict[int, str]]:
        """Write ended attempts in ``conn``'s transaction and settle the batches and workflows they finish.

        Returns the ids written (the lease still held), with their batch and workflow, and
        the steps they released, with their queue, no worker woken for them yet
        (``Workflows.settle``). Completions and rescues alike: a lost lease is an ended attempt too.
        """
        if any(c.growth is not None for c in completions):  # steps added at run time: rare, checked again
            completions = self._workflows.judge_growth(conn, completions)
        applied = self._db.driver.complete(self._db, conn, completions)
        return applied, self._settle(conn, completions, applied)

    def _settle(self, conn: Connection, completions: Sequence[Completion], applied: Applied) -> dict[int, str]:
        """Settle the batches and workflows the ``applied`` completions finish; return the steps released."""
        in_batches = applied.batches
        finished = {
            batch_id
            for c in completions
            if (batch_id := in_batches.get(c.job_id)) is not None and c.final_at is not None
        }
        if finished:
            # The continuation a completion calls for is deferred in this same transaction.
            self._batches.settle(conn, finished)
        released: dict[int, str] = {}
        if applied.workflows:  # a job outside a workflow never gets here: no statement more for it
            steps: dict[int, list[tuple[int, JobStatus]]] = {}
            growth = {}
            for c in completions:
                workflow_id = applied.workflows.get(c.job_id)
                if workflow_id is not None and c.final_at is not None:
                    steps.setdefault(workflow_id, []).append((c.job_id, c.status))
                    if c.growth is not None:
                        growth[c.job_id] = c.growth
            if steps:
                # Its dependents are released (or cancelled) in this same transaction: exactly once;
                # so are the steps it added as it ran, with its success.
                released = self._workflows.settle(conn, steps, growth)
        return released

    def renew(self, owner: str, lease_seconds: float, job_ids: Collection[int] | None = None) -> LeaseReport:
        """Extend every lease ``owner`` holds; report which it still holds and which to cancel.

        With ``job_ids`` (what the worker knows it runs) only those rows are
        looked at, through the primary key. Without, every running row is
        scanned, dead index entries of finished jobs included: at 150,000 jobs
        through the queue that took seconds per renewal.
        """
        jobs = self._db.tables.jobs
        expires = self._clock() + timedelta(seconds=lease_seconds)
        running = jobs.c.status == JobStatus.RUNNING.value
        held = [jobs.c.lease_owner == owner, running]
        chunks: list[dict[str, Any]] = [{}]
        if job_ids is not None:
            if not job_ids:
                return LeaseReport(held=frozenset(), cancel_requested=frozenset())
            # The ids through the primary key; IS TRUE keeps the status out of index conditions.
            held = [self._db.driver.in_bound_list(jobs.c.id, "ids"), jobs.c.lease_owner == owner, running.is_(true())]
            # In chunks: a worker may hold more ids than a statement takes parameters (65,535 on
            # PostgreSQL, 32,766 on SQLite, where each id is one), and a failed renewal loses them all.
            ids = sorted(job_ids)  # ascending across chunks too: the order completions lock in
            chunks = [{"ids": ids[i : i + RENEWAL_CHUNK]} for i in range(0, len(ids), RENEWAL_CHUNK)]
        stmt = update(jobs).where(*held).values(lease_expires_at=expires).returning(jobs.c.id, jobs.c.cancel_requested)
        rows: list[Any] = []
        with self._db.driver.alone(self._db.engine) as conn:  # no row stays locked if we freeze after it
            for chunk in chunks:
                rows += self._db.driver.execute_update(conn, stmt, chunk).all()
        return LeaseReport(
            held=frozenset(r.id for r in rows),
            cancel_requested=frozenset(r.id for r in rows if r.cancel_requested),
        )

    def rescue_expired(self, batch: int = 500) -> list[int]:
        """Give the jobs of dead workers back to the queue; return their ids.

        The lost attempt counts (``transitions.lease_lost``) and is logged as
        ``lost``. Any number of workers may call this at once: each row is taken
        by one of them (SKIP LOCKED, then a compare-and-set on the lease).
        """
        jobs = self._db.tables.jobs
        return self._rescue(jobs.c.lease_expires_at < self._clock(), JobsteadErrorType.LEASE_EXPIRED, batch)

    def release_host(self, host: str, batch: int = 500) -> list[int]:
        """Rescue at once every job held by workers on ``host`` (a pod that is gone).

        The operator calls this when a worker pod is deleted or has failed: its
        leases would expire anyway, but there is no reason to wait for them.
        """
        jobs, workers = self._db.tables.jobs, self._db.tables.workers
        on_host = select(workers.c.id).where(workers.c.hostname == host).scalar_subquery()
        return self._rescue(jobs.c.lease_owner.in_(on_host), JobsteadErrorType.WORKER_GONE, batch, host=host)

    def _rescue(self, which: Any, why: JobsteadErrorType, batch: int, host: str = "") -> list[int]:
        t = self._db.tables
        jobs, handlers = t.jobs, t.handlers
        now = self._clock()
        # Rows locked here are skipped by every other rescuer: a rescuer frozen mid-way
        # must not keep them for longer than the bound.
        with self._workflows.counted(self._db.begin_bounded()) as conn:
            lost = self._db.driver.lock_rows(
                conn,
                select(
                    jobs.c.id,
                    jobs.c.lease_owner,
                    jobs.c.attempts,
                    jobs.c.max_attempts,
                    handlers.c.max_attempts.label("handler_max_attempts"),
                )
                .select_from(jobs.outerjoin(handlers, handlers.c.name == jobs.c.handler))
                .where(jobs.c.status == JobStatus.RUNNING.value, which)
                .limit(batch),
                jobs,
                skip_locked=True,
            ).all()
            # Locked already (and never waited for: SKIP LOCKED), so the order written in is free.
            completions = [
                lease_lost(
                    row.id,
                    row.lease_owner,
                    row.attempts,
                    now,
                    JobError(
                        type=why, message=_LOST_MESSAGES[why].format(owner=row.lease_owner, host=host), traceback=""
                    ),
                    attempts_allowed=EffectiveSettings.max_attempts_of(row.max_attempts, row.handler_max_attempts),
                )
                for row in lost
            ]
            rescued, released = self._write(conn, completions) if completions else (Applied(), {})
            self._workflows.wake(conn, released)
        return [c.job_id for c in completions if c.job_id in rescued]

    def release(self, job_id: int, owner: str, attempt: int) -> bool:
        """Hand a job back unfinished (graceful shutdown); the attempt is not spent (``transitions.released``)."""
        t = self._db.tables
        c = released(job_id, owner, attempt, self._clock())
        values: dict[str, Any] = {
            "status": c.status.value,
            "run_at": c.run_at,
            "lease_owner": c.kept_owner,
            "lease_expires_at": None,
            "cancel_requested": False,
        }
        if not c.spends_attempt:
            values["attempts"] = t.jobs.c.attempts - 1
        with self._db.begin_bounded() as conn:
            row = self._db.driver.execute_update(
                conn,
                update(t.jobs).where(self._held(job_id, owner, attempt)).values(values).returning(t.jobs.c.started_at),
            ).first()
            if row is None:
                return False
            if c.logged:
                conn.execute(
                    insert(t.attempts).values(
                        job_id=job_id,
                        attempt=attempt,
                        worker_id=owner,
                        started_at=row.started_at,
                        finished_at=c.finished_at,
                        outcome=c.outcome.value,
                    )
                )
        return True

    def checkpoint(self, job_id: int, owner: str, attempt: int, data: Any) -> bool:
        """Persist progress now; False if the lease is gone (the caller should stop)."""
        jobs = self._db.tables.jobs
        with self._db.driver.alone(self._db.engine) as conn:  # see ``renew``
            return bool(
                conn.execute(update(jobs).where(self._held(job_id, owner, attempt)).values(checkpoint=data)).rowcount
            )
