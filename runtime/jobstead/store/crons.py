"""Crons: their definitions, who owns each one, and the exactly-once fire.

Three sources write crons, and each owns its rows: ``code`` (``@app.cron``,
published whenever an app's worker or scheduler starts), ``crd`` (the operator,
from ``CronSchedule`` resources) and ``database`` (the CLI, or SQL by hand).
Nothing deletes a row of another source; code never overwrites a row another
source wrote; and publishing keeps ``enabled`` as the database has it, so a
code cron someone disabled stays disabled across deploys.

A fire is one transaction of two single statements, so it needs no session
state (PgBouncer in transaction mode is fine) and no leader:

1. compare-and-set the cron's ``handled_until`` from before the fire time to
   the fire time (only if the schedule is still the one the fire was computed
   from). Of several schedulers, one moves it; the others match no row. It also
   keeps a scheduler whose clock lags from firing a time that another one
   already skipped as missed;
2. insert the job with ``(cron_name, cron_fire_at)`` under a unique index,
   ``ON CONFLICT DO NOTHING``: at most one job per cron and fire time, whatever
   happens to ``handled_until`` (a clock stepping back, a cron re-enabled by a
   host whose clock lags).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, select, update

from ..clock import Clock, as_utc
from ..cron.schedule import CronSchedule, InvalidSchedule
from ..errors import ConfigurationError, InvalidState
from ..status import LIVE_STATUSES
from .database import Database
from .enqueue import Enqueuer
from .new_jobs import new_jobs
from .records import CronDefinition, CronRecord, CronSource


class SkipReason(StrEnum):
    """Why a fire time was consumed without a job (the scheduler's ``Skipped.reason``)."""

    #: Found later than the cron's starting deadline (``Crons.skip``).
    DEADLINE = "deadline"
    #: The cron's previous job was still live (``overlap="skip"``).
    OVERLAP = "overlap"


class FireOutcome(StrEnum):
    """What ``Crons.fire`` did with a fire time."""

    #: A job was inserted (``FireResult.job_id``).
    FIRED = "fired"
    #: Consumed without a job, the previous one still being live (``overlap="skip"``).
    OVERLAP = "overlap"
    #: Consumed, but its job already existed (another scheduler inserted it).
    DUPLICATE = "duplicate"
    #: Nothing done: the fire time was already handled, or the cron was changed,
    #: disabled or removed since it was read.
    STALE = "stale"

    @property
    def handled_here(self) -> bool:
        """Whether this call dealt with the fire time (a job or a skip), not another scheduler."""
        return self in (FireOutcome.FIRED, FireOutcome.OVERLAP)


@dataclass(frozen=True)
class FireResult:
    """What ``Crons.fire`` did (``outcome``), and the jobs concerned."""

    outcome: FireOutcome
    job_id: int | None = None
    previous_job_id: int | None = None


class Crons:
    def __init__(self, db: Database, clock: Clock, enqueuer: Enqueuer) -> None:
        self._db = db
        self._clock = clock
        self._enqueuer = enqueuer  # a fire defers its job the way every job is deferred

    # -- definitions -----------------------------------------------------------

    def publish(self, definitions: Iterable[CronDefinition]) -> list[CronRecord]:
        """Upsert code-defined crons; return the rows left alone because another source owns the name.

        A missing cron is (re)created, enabled unless its definition says
        otherwise; an existing code cron takes the code's settings but keeps
        ``enabled``. A changed schedule or time zone starts counting from now,
        so the change itself causes no catch-up fire.
        """
        checked = [(d, d.check()) for d in sorted(definitions, key=lambda d: d.name)]
        for d, _ in checked:
            if d.source != "code":
                raise ConfigurationError(f"cron {d.name}: publish() takes code crons; use put() for source {d.source}")
        crons = self._db.tables.crons
        now = self._clock()
        shadowed: list[CronRecord] = []
        with self._db.begin_bounded() as conn:
            for d, schedule in checked:
                values = _values(d, schedule)
                row = self._row(conn, d.name)
                if row is None:
                    stmt = self._dialect_insert(crons).values(
                        **values, handled_until=now, created_at=now, updated_at=now
                    )
                    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                    continue
                if row["source"] != "code":
                    shadowed.append(_record(row))
                    continue
                changes = {k: v for k, v in values.items() if k != "enabled" and row[k] != v}
                if not changes:
                    continue
                if "schedule" in changes or "timezone" in changes:
                    changes["handled_until"] = max(row["handled_until"], now)
                conn.execute(
                    update(crons)
                    .where(crons.c.name == d.name, crons.c.source == "code")
                    .values(**changes, updated_at=now)
                )
        return shadowed

    def put(self, definition: CronDefinition) -> CronRecord:
        """Write a cron as given, whatever its source (the operator's way in); return it.

        Scheduling state (last fire, last job) is kept. A changed schedule or
        time zone, or a disabled cron being enabled, counts from now: fire
        times in between are not caught up.
        """
        schedule = definition.check()
        values = _values(definition, schedule)
        crons = self._db.tables.crons
        now = self._clock()
        with self._db.begin_bounded() as conn:
            row = self._row(conn, definition.name)
            if row is None:
                stmt = self._dialect_insert(crons).values(**values, handled_until=now, created_at=now, updated_at=now)
                created = (
                    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]).returning(*crons.c))
                    .mappings()
                    .first()
                )
                if created is not None:
                    return _record(created)
                row = self._row(conn, definition.name)  # another writer created it meanwhile
                assert row is not None
            changes: dict[str, Any] = dict(values)
            restart = (
                row["schedule"] != values["schedule"]
                or row["timezone"] != values["timezone"]
                or (values["enabled"] and not row["enabled"])
            )
            if restart:
                changes["handled_until"] = max(row["handled_until"], now)
            conn.execute(update(crons).where(crons.c.name == definition.name).values(**changes, updated_at=now))
            row = self._row(conn, definition.name)
            assert row is not None
            return _record(row)

    def add(self, definition: CronDefinition) -> CronRecord:
        """Create a cron; ``InvalidState`` if the name is taken (by any source)."""
        schedule = definition.check()
        crons = self._db.tables.crons
        now = self._clock()
        with self._db.begin_bounded() as conn:
            stmt = self._dialect_insert(crons).values(
                **_values(definition, schedule), handled_until=now, created_at=now, updated_at=now
            )
            stmt = stmt.on_conflict_do_nothing(index_elements=["name"]).returning(*crons.c)
            row = conn.execute(stmt).mappings().first()
            if row is None:
                existing = self._row(conn, definition.name)
                source = existing["source"] if existing is not None else "unknown"
                raise InvalidState(f"a cron named {definition.name!r} already exists (source: {source})")
            return _record(row)

    def remove(self, name: str, *, source: CronSource) -> bool:
        """Delete the cron if ``source`` wrote it; its jobs stay."""
        crons = self._db.tables.crons
        with self._db.begin_bounded() as conn:
            return bool(conn.execute(delete(crons).where(crons.c.name == name, crons.c.source == source)).rowcount)

    def set_enabled(self, name: str, enabled: bool) -> CronRecord | None:
        """Enable or disable a cron of any source; None if there is none of that name.

        Enabling counts from now: the fire times it slept through are not caught up.
        """
        crons = self._db.tables.crons
        now = self._clock()
        with self._db.begin_bounded() as conn:
            row = self._row(conn, name)
            if row is None:
                return None
            if bool(row["enabled"]) != enabled:
                changes: dict[str, Any] = {"enabled": enabled, "updated_at": now}
                if enabled:
                    changes["handled_until"] = max(row["handled_until"], now)
                conn.execute(update(crons).where(crons.c.name == name).values(**changes))
                row = self._row(conn, name)
                assert row is not None
            return _record(row)

    def get(self, name: str) -> CronRecord | None:
        with self._db.engine.connect() as conn:
            row = self._row(conn, name)
        return _record(row) if row is not None else None

    def list_crons(
        self,
        *,
        handlers: Collection[str] | None = None,
        enabled: bool | None = None,
        source: CronSource | None = None,
    ) -> list[CronRecord]:
        crons = self._db.tables.crons
        stmt = select(crons).order_by(crons.c.name)
        if handlers is not None:
            stmt = stmt.where(crons.c.handler.in_(sorted(handlers)))
        if enabled is not None:
            stmt = stmt.where(crons.c.enabled.is_(enabled))
        if source is not None:
            stmt = stmt.where(crons.c.source == source)
        with self._db.engine.connect() as conn:
            return [_record(row) for row in conn.execute(stmt).mappings()]

    # -- firing ----------------------------------------------------------------

    def fire(
        self,
        name: str,
        fire_at: datetime,
        *,
        schedule: str,
        timezone: str,
        now: datetime | None = None,
    ) -> FireResult:
        """Defer the job of one fire time, at most once however many schedulers call this.

        ``schedule`` and ``timezone`` are what the caller computed ``fire_at``
        from; if the cron has changed since, nothing happens (``stale``).
        """
        fire_at = as_utc(fire_at)
        now = as_utc(now) if now is not None else self._clock()
        crons = self._db.tables.crons
        with self._db.begin_bounded() as conn:
            row = (
                self._db.driver.execute_update(
                    conn,
                    update(crons)
                    .where(
                        crons.c.name == name,
                        crons.c.enabled.is_(True),
                        crons.c.schedule == schedule,
                        crons.c.timezone == timezone,
                        crons.c.handled_until < fire_at,
                    )
                    .values(handled_until=fire_at)
                    .returning(
                        crons.c.handler,
                        crons.c.args,
                        crons.c.queue,
                        crons.c.priority,
                        crons.c.tenant,
                        crons.c.overlap,
                        crons.c.last_job_id,
                    ),
                )
                .mappings()
                .first()
            )
            if row is None:
                return FireResult(FireOutcome.STALE)
            previous = row["last_job_id"]
            if row["overlap"] == "skip" and previous is not None and self._is_live(conn, previous):
                return FireResult(FireOutcome.OVERLAP, previous_job_id=previous)
            (new,) = new_jobs(
                row["handler"],
                [row["args"] or {}],
                self._enqueuer.defaults_of(conn, row["handler"]),
                clock=self._clock,
                queue=row["queue"],
                priority=row["priority"],
                run_at=fire_at,
                tenant=row["tenant"],
                metadata={"cron": name, "cron_fire_at": fire_at.isoformat()},
                cron_name=name,
                cron_fire_at=fire_at,
            )
            job = self._enqueuer.insert_fire(conn, new, now)
            if job is None:
                return FireResult(FireOutcome.DUPLICATE, previous_job_id=previous)
            job_id = job.id
            conn.execute(update(crons).where(crons.c.name == name).values(last_fire_at=fire_at, last_job_id=job_id))
            return FireResult(FireOutcome.FIRED, job_id=int(job_id), previous_job_id=previous)

    def skip(self, name: str, fire_at: datetime, *, schedule: str, timezone: str) -> bool:
        """Consume a fire time without a job (missed beyond the starting deadline); True if this call did."""
        crons = self._db.tables.crons
        fire_at = as_utc(fire_at)
        with self._db.begin_bounded() as conn:
            return bool(
                conn.execute(
                    update(crons)
                    .where(
                        crons.c.name == name,
                        crons.c.enabled.is_(True),
                        crons.c.schedule == schedule,
                        crons.c.timezone == timezone,
                        crons.c.handled_until < fire_at,
                    )
                    .values(handled_until=fire_at)
                ).rowcount
            )

    # -- helpers ---------------------------------------------------------------

    def _row(self, conn: Connection, name: str) -> RowMapping | None:
        crons = self._db.tables.crons
        return conn.execute(select(crons).where(crons.c.name == name)).mappings().first()

    def _is_live(self, conn: Connection, job_id: int) -> bool:
        jobs = self._db.tables.jobs
        status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        return status in {s.value for s in LIVE_STATUSES}

    def _dialect_insert(self, table: Any) -> Any:
        return self._db.driver.upsert(table)


def _values(d: CronDefinition, schedule: CronSchedule) -> dict[str, Any]:
    return {
        "name": d.name,
        "schedule": schedule.expression,
        "timezone": schedule.timezone,
        "handler": d.handler,
        "args": dict(d.args),
        "queue": d.queue,
        "priority": d.priority,
        "tenant": d.tenant,
        "enabled": bool(d.enabled),
        "overlap": d.overlap,
        "starting_deadline": float(d.starting_deadline) if d.starting_deadline is not None else None,
        "source": d.source,
    }


def _record(row: RowMapping) -> CronRecord:
    enabled = bool(row["enabled"])
    next_fire_at = None
    if enabled:
        try:
            next_fire_at = CronSchedule.parse(row["schedule"], row["timezone"]).next_after(row["handled_until"])
        except InvalidSchedule:  # written by hand with a bad schedule: shown, never fired
            next_fire_at = None
    return CronRecord(
        name=row["name"],
        schedule=row["schedule"],
        handler=row["handler"],
        timezone=row["timezone"],
        args=row["args"] or {},
        queue=row["queue"],
        priority=row["priority"],
        tenant=row["tenant"],
        enabled=enabled,
        overlap=row["overlap"],
        starting_deadline=row["starting_deadline"],
        source=row["source"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        handled_until=row["handled_until"],
        last_fire_at=row["last_fire_at"],
        last_job_id=int(row["last_job_id"]) if row["last_job_id"] is not None else None,
        next_fire_at=next_fire_at,
    )


__all__ = ["Crons", "FireOutcome", "FireResult", "SkipReason"]
