"""Claiming jobs: the hot path, and the one place the global concurrency limit lives.

Two paths, chosen per claim:

* Handlers without a limit: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
  SKIP LOCKED) RETURNING *`` statement. Concurrent workers skip each other's rows
  instead of waiting on them.
* Handlers with a limit: the claim first locks their ``handlers`` rows (``FOR
  UPDATE``), then counts their running jobs, then claims at most the remaining
  room. Every claim of a limited handler holds that row lock until commit, so two
  workers can never both see "2 of 3 running" and both take the third slot; the
  limit holds across every process and pod. Completions do not need the lock:
  they only ever make room.

On SQLite the transaction itself is the lock (``BEGIN IMMEDIATE``).

Pauses and which handlers have a limit are read at the start of each claim,
in the same transaction (``_blocked``): a pause, or a limit the operator just
set, takes effect from the next claim.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, DateTime, any_, func, literal, select, type_coerce, union_all, update

from ..clock import Clock
from ..retry import RetryPolicy
from ..status import CLAIMABLE_STATUSES, JobStatus
from .database import Database
from .records import ClaimedJob


@dataclass(frozen=True)
class Blocked:
    """What stops a claim: a global pause, paused queues and handlers, handlers with a limit."""

    everything: bool
    queues: set[str]
    handlers: set[str]
    limited: set[str]


class Claims:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def claim(
        self,
        *,
        worker_id: str,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` ready jobs of ``handlers``, serving ``queues`` in order."""
        if limit <= 0 or not handlers:
            return []
        now = self._clock()
        with self._db.engine.begin() as conn:
            blocked = self._blocked(conn, handlers)
            if blocked.everything:
                return []
            mine = [h for h in handlers if h not in blocked.handlers]
            free = [h for h in mine if h not in blocked.limited]
            room: dict[str, int] = {}
            if any(h in blocked.limited for h in mine):
                room, unlimited_now = self._room(conn, [h for h in mine if h in blocked.limited])
                free += unlimited_now
            claimed: list[ClaimedJob] = []
            for queue in queues or (None,):
                wanted = limit - len(claimed)
                if wanted <= 0:
                    break
                if queue in blocked.queues:
                    continue
                which = self._pick(conn, now, queue, free, room, wanted, blocked.queues)
                if which is not None:
                    taken = self._take(conn, now, which, worker_id, lease_seconds)
                    for job in taken:
                        if job.handler in room:
                            room[job.handler] -= 1
                    claimed += taken
            claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))
            return claimed

    def _blocked(self, conn: Connection, handlers: Sequence[str]) -> Blocked:
        """Pauses, and which of ``handlers`` have a global limit: one small read before the claim.

        Read up front rather than checked per row inside the claim: correlated
        ``NOT EXISTS`` conditions make PostgreSQL read every ready row instead
        of walking the ordered index to the ``LIMIT`` (the benchmark showed it).
        A pause or a limit set meanwhile takes effect at the next claim.
        """
        pauses, handler_rows = self._db.tables.pauses, self._db.tables.handlers
        rows = conn.execute(
            union_all(
                select(pauses.c.scope, pauses.c.name),
                select(literal("limit"), handler_rows.c.name).where(
                    handler_rows.c.name.in_(list(handlers)), handler_rows.c.concurrency.is_not(None)
                ),
            )
        ).all()
        return Blocked(
            everything=any(scope == "all" for scope, _ in rows),
            queues={name for scope, name in rows if scope == "queue"},
            handlers={name for scope, name in rows if scope == "handler"},
            limited={name for scope, name in rows if scope == "limit"},
        )

    def _room(self, conn: Connection, limited: list[str]) -> tuple[dict[str, int], list[str]]:
        """Lock the limited handlers' rows; return their free slots and the ones no longer limited."""
        h = self._db.tables.handlers
        jobs = self._db.tables.jobs
        rows = conn.execute(
            select(h.c.name, h.c.concurrency)
            .where(h.c.name.in_(limited), h.c.concurrency.is_not(None))
            .order_by(h.c.name)  # one lock order for everyone: no deadlocks
            .with_for_update()
        ).all()
        limits = {name: int(concurrency) for name, concurrency in rows}
        running: dict[str, int] = {}
        if limits:
            running = {
                name: int(n)
                for name, n in conn.execute(
                    select(jobs.c.handler, func.count())
                    .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.handler.in_(list(limits)))
                    .group_by(jobs.c.handler)
                ).all()
            }
        room = {name: cap - running.get(name, 0) for name, cap in limits.items()}
        return room, [name for name in limited if name not in limits]

    def _pick(
        self,
        conn: Connection,
        now: datetime,
        queue: str | None,
        free: list[str],
        room: dict[str, int],
        wanted: int,
        paused_queues: Collection[str],
    ) -> ColumnElement[bool] | None:
        """Which jobs to claim from one queue (best first), or None for none.

        With no limited handler open this is a subquery, so the claim stays a
        single statement; otherwise candidates are locked and chosen here.
        """
        jobs = self._db.tables.jobs
        limited_open = {name: n for name, n in room.items() if n > 0}
        if not limited_open:
            if not free:
                return None
            stmt = self._candidates(now, queue, jobs.c.handler.in_(free), paused_queues, limit=wanted)
            ids = stmt.with_only_columns(jobs.c.id).scalar_subquery()
            if self._db.is_postgres:
                # id = ANY(ARRAY(...)): the chosen ids become one array, and the UPDATE finds
                # them through the primary key. With IN (subquery) the planner may hash-join
                # against a scan of the whole table instead (it did, at 20,000 queued jobs).
                return jobs.c.id == any_(func.array(ids))
            return jobs.c.id.in_(ids)
        found: list[Any] = []
        for name, n in limited_open.items():
            found += conn.execute(
                self._candidates(now, queue, jobs.c.handler == name, paused_queues, limit=min(n, wanted))
            ).all()
        if free:
            found += conn.execute(
                self._candidates(now, queue, jobs.c.handler.in_(free), paused_queues, limit=wanted)
            ).all()
        found.sort(key=lambda r: (-r.priority, r.run_at, r.id))
        ids = [r.id for r in found[:wanted]]
        return jobs.c.id.in_(ids) if ids else None

    def _candidates(
        self,
        now: datetime,
        queue: str | None,
        which: ColumnElement[bool],
        paused_queues: Collection[str],
        *,
        limit: int,
    ) -> Any:
        jobs = self._db.tables.jobs
        conditions: list[ColumnElement[bool]] = [
            jobs.c.status.in_([s.value for s in CLAIMABLE_STATUSES]),
            jobs.c.run_at <= now,
            which,
        ]
        if queue is not None:
            conditions.append(jobs.c.queue == queue)
        elif paused_queues:
            conditions.append(jobs.c.queue.not_in(list(paused_queues)))
        return (
            select(jobs.c.id, jobs.c.priority, jobs.c.run_at)
            .where(*conditions)
            .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=jobs)
        )

    def _times(self, *columns: ColumnElement[datetime]) -> list[ColumnElement[datetime]]:
        """Timestamps as the driver returns them where that is already aware UTC.

        PostgreSQL connections run in UTC (``create_job_engine``), so the
        ``UTCDateTime`` conversion would only cost a Python call per value, two per
        claimed job; SQLite stores naive text and needs it.
        """
        if not self._db.is_postgres:
            return list(columns)
        return [type_coerce(column, DateTime(timezone=True)) for column in columns]

    def _take(
        self,
        conn: Connection,
        now: datetime,
        which: ColumnElement[bool],
        worker_id: str,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        jobs = self._db.tables.jobs
        c = jobs.c
        rows = conn.execute(
            update(jobs)
            .where(which)
            .values(
                status=JobStatus.RUNNING.value,
                attempts=c.attempts + 1,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                cancel_requested=False,
            )
            .returning(
                c.id,
                c.handler,
                c.queue,
                c.priority,
                c.args,
                *self._times(c.run_at, c.created_at),
                c.attempts,
                c.max_attempts,
                c.retry,
                c.timeout,
                c.tenant,
                c.metadata,
                c.checkpoint,
            )
        ).all()
        return [
            ClaimedJob(
                job_id,
                handler,
                queue,
                priority,
                args or {},
                run_at,
                created_at,
                attempts,
                max_attempts,
                RetryPolicy.from_json(retry) if retry else None,
                timeout,
                tenant,
                metadata,
                checkpoint,
            )
            for (
                job_id,
                handler,
                queue,
                priority,
                args,
                run_at,
                created_at,
                attempts,
                max_attempts,
                retry,
                timeout,
                tenant,
                metadata,
                checkpoint,
            ) in rows
        ]
