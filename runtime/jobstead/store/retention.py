"""Retention: finished jobs are deleted after a while; failures are kept longer.

Succeeded and cancelled jobs go after ``finished``; dead and failed ones (the
dead-letter set someone may still want to inspect or retry) after ``dead``.

A batch's jobs (members and continuations) are never pruned one by one: its
statistics are a count of its members, which must not drift. The batch goes
as a whole, its jobs with it, once it has completed, none of its
continuations is still live, and it finished longer ago than ``finished``
(``dead`` if any member failed or died). A workflow likewise: its steps and
continuations go with it once it is final, none of its jobs is live, and it
finished longer ago than ``finished`` (``dead`` if it failed); its edges and
fired events go with its row.
Deletes run in small batches, each its own transaction, so pruning a backlog
of millions never holds long locks or bloats one transaction; attempt rows go
with their job (ON DELETE CASCADE). Any number of workers may prune at once.

Flow control leaves rows per key behind (``prune_flow``), whatever the jobs'
retention: the ring of each key of a rate per key, and each key's fair sharing
turn. A key's ring goes once every stamp in it is older than its rate's period
(each row deleted only while it is free as the claim sees it: no start it
counted is forgotten, so no rate is exceeded); a key's turn goes once the key
has no unfinished job (it comes back as a new key would: first in line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, select

from ..clock import Clock
from ..flow import TENANT
from ..status import LIVE_STATUSES, JobStatus
from .claims import KEYED_RING, NO_KEY
from .database import Database
from .limits import ring_owner

SUCCESSES = (JobStatus.SUCCEEDED, JobStatus.CANCELLED)
FAILURES = (JobStatus.DEAD, JobStatus.FAILED)


@dataclass(frozen=True)
class FlowPruned:
    """What ``Retention.prune_flow`` deleted: rows of idle keys' rate rings, and idle keys' fair turns."""

    rate_rows: int = 0
    fair_turns: int = 0


class Retention:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def prune(self, *, finished: timedelta | None, dead: timedelta | None, batch: int = 2000) -> int:
        """Delete succeeded/cancelled jobs older than ``finished`` and dead/failed older than ``dead``.

        ``None`` keeps that kind forever. Returns how many jobs were deleted.
        """
        total = 0
        now = self._clock()
        for statuses, age in ((SUCCESSES, finished), (FAILURES, dead)):
            if age is None:
                continue
            while True:
                deleted = self._prune_batch([s.value for s in statuses], now - age, batch)
                total += deleted
                if deleted < batch:
                    break
        if finished is not None:
            total += self._prune_batches(now - finished, None if dead is None else now - dead, batch)
            total += self._prune_workflows(now - finished, None if dead is None else now - dead, batch)
        return total

    def _prune_workflows(self, finished_before: datetime, failed_before: datetime | None, batch: int) -> int:
        """Whole workflows that aged out: their jobs, then the workflow rows (edges and events go with them)."""
        t = self._db.tables
        jobs, workflows = t.jobs, t.workflows
        live = [s.value for s in (*LIVE_STATUSES, JobStatus.BLOCKED)]
        still_live = select(jobs.c.id).where(jobs.c.workflow_id == workflows.c.id, jobs.c.status.in_(live)).exists()
        failed = workflows.c.status == "failed"
        old_enough = workflows.c.finished_at < finished_before
        if failed_before is None:
            old_enough = and_(old_enough, ~failed)
        else:
            old_enough = and_(old_enough, or_(~failed, workflows.c.finished_at < failed_before))
        deleted = 0
        with self._db.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(workflows.c.id)
                    .where(
                        workflows.c.status != "active", workflows.c.finished_at.is_not(None), old_enough, ~still_live
                    )
                    .order_by(workflows.c.finished_at)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                deleted = int(conn.execute(delete(jobs).where(jobs.c.workflow_id.in_(ids))).rowcount)
                conn.execute(delete(t.workflow_edges).where(t.workflow_edges.c.workflow_id.in_(ids)))
                conn.execute(delete(t.workflow_events).where(t.workflow_events.c.workflow_id.in_(ids)))
                conn.execute(delete(workflows).where(workflows.c.id.in_(ids)))
        return deleted

    def _prune_batches(self, finished_before: datetime, failed_before: datetime | None, batch: int) -> int:
        """Whole batches that aged out: their jobs, then the batch rows (fired events go with them)."""
        t = self._db.tables
        jobs, batches = t.jobs, t.batches
        live = [s.value for s in LIVE_STATUSES]
        still_live = select(jobs.c.id).where(jobs.c.batch_id == batches.c.id, jobs.c.status.in_(live)).exists()
        had_failures = (
            select(jobs.c.id)
            .where(
                jobs.c.batch_id == batches.c.id,
                jobs.c.batch_event.is_(None),
                jobs.c.status.in_([s.value for s in FAILURES]),
            )
            .exists()
        )
        old_enough = batches.c.finished_at < finished_before
        if failed_before is None:
            old_enough = and_(old_enough, ~had_failures)
        else:
            old_enough = and_(old_enough, or_(~had_failures, batches.c.finished_at < failed_before))
        deleted = 0
        with self._db.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.status != "active", batches.c.finished_at.is_not(None), old_enough, ~still_live)
                    .order_by(batches.c.finished_at)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                deleted = int(conn.execute(delete(jobs).where(jobs.c.batch_id.in_(ids))).rowcount)
                conn.execute(delete(batches).where(batches.c.id.in_(ids)))
        return deleted

    def _prune_batch(self, statuses: list[str], before: object, batch: int) -> int:
        jobs = self._db.tables.jobs
        oldest = (
            select(jobs.c.id)
            # Jobs of a batch or a workflow go with it (_prune_batches, _prune_workflows), never alone.
            .where(
                jobs.c.status.in_(statuses),
                jobs.c.finished_at < before,
                jobs.c.batch_id.is_(None),
                jobs.c.workflow_id.is_(None),
            )
            .order_by(jobs.c.finished_at)
            .limit(batch)
        )
        oldest = self._db.driver.lock_for_prune(oldest)  # two pruners never wait on each other's rows
        with self._db.engine.begin() as conn:
            return int(conn.execute(delete(jobs).where(self._db.driver.id_in(jobs.c.id, oldest))).rowcount)

    # -- flow control's rows per key -------------------------------------------------------------

    def prune_flow(self, batch: int = 500) -> FlowPruned:
        """Rings of rates per key idle longer than their period, and fair turns of keys with no unfinished job."""
        return FlowPruned(self._prune_rings(batch), self._prune_turns(batch))

    def _prune_rings(self, batch: int) -> int:
        """The rings of keys whose every stamp is older than the rate's period (or that were never stamped).

        A ring whose handler is known (its name starts with the handler's) is
        idle after that handler's period; any other (a digest of a long name,
        or a handler whose rate per key is gone) after the longest period of
        any rate. Each row is deleted only while it is free (``used_at`` NULL
        or a period old, re-checked by the DELETE itself): a claimer that
        stamps it meanwhile keeps it. A ring a claim needs again is made anew,
        free, as on its first use, which is what its old rows were.
        """
        t = self._db.tables
        rings, handlers, shared = t.rate_slots, t.handlers, t.rate_limits
        now = self._clock()
        with self._db.engine.connect() as conn:
            keyed = {
                name: float(per)
                for name, per in conn.execute(
                    select(handlers.c.name, handlers.c.rate_period).where(
                        handlers.c.rate_limit.is_not(None), handlers.c.rate_limit_by.is_not(None)
                    )
                )
            }
            every_period = select(handlers.c.rate_period).where(handlers.c.rate_period.is_not(None))
            longest = max(
                [float(p) for (p,) in conn.execute(every_period.union_all(select(shared.c.rate_period)))], default=0.0
            )
            newest: list[tuple[str, datetime | None]] = [
                (name, last)
                for name, last in conn.execute(
                    select(rings.c.name, func.max(rings.c.used_at))
                    .where(rings.c.kind == KEYED_RING)
                    .group_by(rings.c.name)
                )
            ]
        idle: dict[float, list[str]] = {}
        for name, last in newest:
            owner = ring_owner(name)
            per = keyed[owner] if owner is not None and owner in keyed else longest
            if last is None or last <= now - timedelta(seconds=per):
                idle.setdefault(per, []).append(name)
        deleted = 0
        for per, names in sorted(idle.items()):
            free = or_(rings.c.used_at.is_(None), rings.c.used_at <= now - timedelta(seconds=per))
            for start in range(0, len(names), batch):
                chunk = names[start : start + batch]
                with self._db.engine.begin() as conn:
                    deleted += int(
                        conn.execute(
                            delete(rings).where(rings.c.kind == KEYED_RING, rings.c.name.in_(chunk), free)
                        ).rowcount
                    )
        return deleted

    def _prune_turns(self, batch: int) -> int:
        """Fair turns of keys with no unfinished job of their handler (and every turn of a handler no longer fair).

        Read, then deleted: a key deferred in between loses its place in the
        round, and is served as a new key is (first): a turn is an order, not a limit.
        """
        t = self._db.tables
        jobs, turns, handlers = t.jobs, t.fair_turns, t.handlers
        with self._db.engine.connect() as conn:
            fair = {
                name: TENANT if by == TENANT else "fair_key"
                for name, by in conn.execute(
                    select(handlers.c.name, handlers.c.fair_by).where(handlers.c.fair_by.is_not(None))
                )
            }
            kept = {name for (name,) in conn.execute(select(turns.c.handler).distinct())}
            idle: dict[str, list[str]] = {}
            for handler in sorted(kept & set(fair)):
                column = jobs.c[fair[handler]]
                live = {
                    NO_KEY if key is None else str(key)
                    for (key,) in conn.execute(
                        select(column)
                        .where(
                            jobs.c.status.in_([s.value for s in (*LIVE_STATUSES, JobStatus.BLOCKED)]),
                            jobs.c.handler == handler,
                        )
                        .distinct()
                    )
                }
                idle[handler] = [
                    key
                    for (key,) in conn.execute(select(turns.c.key).where(turns.c.handler == handler))
                    if key not in live
                ]
        deleted = 0
        gone = sorted(kept - set(fair))
        if gone:
            with self._db.engine.begin() as conn:
                deleted += int(conn.execute(delete(turns).where(turns.c.handler.in_(gone))).rowcount)
        for handler, keys in idle.items():
            for start in range(0, len(keys), batch):
                condition: ColumnElement[bool] = and_(
                    turns.c.handler == handler, turns.c.key.in_(keys[start : start + batch])
                )
                with self._db.engine.begin() as conn:
                    deleted += int(conn.execute(delete(turns).where(condition)).rowcount)
        return deleted
