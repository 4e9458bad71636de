"""The store: the only code that writes Jobstead's tables (``tests/store/test_contract.py`` holds it).

The worker, the scheduler, the CLI, the dashboard and the operator all go
through one ``Store``; each part is one concern, so a reader finds the SQL for
any change in one guess:

* ``enqueue`` (``enqueue.py``): every new job's row; ``new_jobs.py`` builds the
  ``NewJob`` (a caller's options over its handler's defaults).
* ``claims`` (``claims.py``): taking jobs to run, the hot path.
* ``leases`` (``leases.py``): what a worker does to a job it holds (complete,
  renew, checkpoint, release) and the rescue of jobs whose worker is gone.
* ``control`` (``control.py``): cancel, retry, delete (one job or many), pause,
  resume; ``moves.py`` writes those changes, ``bulk.py`` picks jobs by filter.
* ``batches`` (``batches.py``): batches and their exactly-once continuations.
* ``workflows`` (``workflows.py``): jobs that depend on jobs, each released
  exactly once in the transaction that ends its last dependency.
* ``crons`` (``crons.py``), ``registry`` (``registry.py``), ``queries``
  (``queries.py``), ``retention`` (``retention.py``), ``turns``
  (``maintenance.py``), ``audit`` (``audit.py``: the dashboard's action log).
* ``presence.py``: what a database holds, without creating anything.

What each status change is, is decided in ``jobstead.transitions`` (pure);
the store only writes it. What differs between databases is the driver's
(``drivers/``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from ..clock import Clock, utcnow
from ..config import resolve_database_url, resolve_schema, resolve_table_prefix
from . import statistics
from .audit import Audit
from .batches import Batches
from .claims import Claims
from .control import Control
from .crons import Crons, FireResult
from .database import Database, open_database
from .database_clock import DatabaseClock
from .drivers.base import WAKE_ALL
from .enqueue import Enqueuer
from .leases import HandOff, Leases
from .maintenance import Turns
from .queries import JobFilter, Queries
from .records import (
    AttemptRecord,
    BatchRecord,
    BatchStats,
    ClaimedJob,
    Completion,
    CronDefinition,
    CronRecord,
    EffectiveSettings,
    HandlerDefinition,
    JobRecord,
    LeaseReport,
    NewJob,
    NewStep,
    Stats,
    StepRecord,
    Upstream,
    WorkflowRecord,
    WorkflowStats,
)
from .registry import Registry
from .retention import Retention
from .tables import Tables, build_tables
from .workflows import Workflows

if TYPE_CHECKING:
    from .drivers.async_alone import AsyncAlone

__all__ = [
    "WAKE_ALL",
    "AttemptRecord",
    "BatchRecord",
    "BatchStats",
    "ClaimedJob",
    "Completion",
    "CronDefinition",
    "CronRecord",
    "Database",
    "EffectiveSettings",
    "FireResult",
    "HandOff",
    "HandlerDefinition",
    "JobFilter",
    "JobRecord",
    "LeaseReport",
    "NewJob",
    "NewStep",
    "Stats",
    "StepRecord",
    "Store",
    "Tables",
    "Upstream",
    "WorkflowRecord",
    "WorkflowStats",
    "Workflows",
]


class Store:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db = db
        # Time-critical decisions go by the database's clock unless a test injects its own.
        self.clock: Clock = DatabaseClock(db) if clock is utcnow and db.driver.server_clock else clock
        self.enqueue = Enqueuer(db, self.clock)
        self.claims = Claims(db, self.clock)
        self.batches = Batches(db, self.clock, self.enqueue)
        self.workflows = Workflows(db, self.clock, self.enqueue)
        self.leases = Leases(db, self.clock, self.batches, self.workflows, self.claims)
        self.control = Control(db, self.clock, self.batches, self.workflows)
        self.registry = Registry(db, self.clock)
        self.queries = Queries(db, self.clock)
        self.retention = Retention(db, self.clock)
        self.crons = Crons(db, self.clock, self.enqueue)
        self.turns = Turns(db, self.clock)
        self.audit = Audit(db, self.clock)

    @classmethod
    def connect(
        cls,
        url: str | URL | None = None,
        *,
        table_prefix: str | None = None,
        schema: str | None = None,
        clock: Clock = utcnow,
        **engine_options: Any,
    ) -> Store:
        """Open the store of ``url``; ``engine_options`` (e.g. ``pool_size``) go to its driver's engine."""
        tables = build_tables(resolve_table_prefix(table_prefix), resolve_schema(schema))
        return cls(open_database(resolve_database_url(url), tables, **engine_options), clock)

    @property
    def tables(self) -> Tables:
        return self.db.tables

    @property
    def supports_listen(self) -> bool:
        """Whether ``listen`` can deliver wake-ups here (LISTEN/NOTIFY); without it, poll."""
        return self.db.driver.supports_listen

    async def listen(
        self,
        queues: Collection[str] | None,
        wake: Callable[[str], None],
        *,
        connected: Callable[[], None] | None = None,
        cancelled: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Call ``wake(queue)`` whenever jobs may be ready in one of ``queues`` (all when None).

        ``queue`` is ``WAKE_ALL`` when anything may be ready (after a reconnect,
        on resume). ``cancelled(job_ids)``: running jobs someone cancelled, to
        stop at once. Returns only if wake-ups cannot work here (then poll);
        callers check ``supports_listen`` first.
        """
        await self.db.driver.listen(
            self.db.engine.url, self.tables.notify_channel, queues, wake, connected=connected, cancelled=cancelled
        )

    def async_alone(self) -> AsyncAlone | None:
        """A connection of its own for one event loop's claims (``claims.claim_async``), or None
        where there is none (claims then go through a thread). The caller closes it."""
        return self.db.driver.async_alone(self.db.engine)

    @property
    def keeps_plans(self) -> bool:
        """Whether ``refresh_planner_statistics`` can do anything here."""
        return self.db.driver.keeps_plans

    def refresh_planner_statistics(self) -> bool:
        """Re-plan the hot statements if the jobs table or the workflows' edges outgrew their
        statistics; whether either did (``statistics.refresh``)."""
        return statistics.refresh(self.db)

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "the database is unreachable for now, retry" (see ``Driver.is_transient``)."""
        return self.db.driver.is_transient(exc)

    def when_connections_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a connection is found cut or on a server that stopped taking
        writes (a failover may be under way); returns what unsubscribes it (``Driver.when_connections_lost``)."""
        return self.db.driver.when_connections_lost(callback)

    def describe(self) -> str:
        """Where this store's database is, for messages: never the password."""
        return self.db.describe()

    # Migrations import the store's modules; importing them here, on use, keeps
    # ``import jobstead.store`` free of Alembic.
    def migrate(self) -> None:
        from ..migrations import upgrade

        upgrade(self.db)

    def schema_is_current(self) -> bool:
        from ..migrations import is_current

        return is_current(self.db)

    def ensure_schema(self) -> None:
        if not self.schema_is_current():
            self.migrate()

    def close(self) -> None:
        self.db.engine.dispose()
