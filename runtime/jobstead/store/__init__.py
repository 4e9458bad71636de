"""The store: the only code that reads or writes Jobstead's tables.

The worker, the scheduler, the CLI and the operator all go through one
``Store``; each attribute is one concern (enqueue, claims, leases, control,
registry, queries, crons), so a reader finds the SQL for any change in one guess.
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from ..clock import Clock, utcnow
from ..config import resolve_database_url, resolve_schema, resolve_table_prefix
from .claims import Claims
from .control import Control
from .crons import Crons, FireResult
from .database import Database, create_job_engine
from .enqueue import Enqueuer
from .leases import Leases
from .queries import JobFilter, Queries
from .records import (
    AttemptRecord,
    ClaimedJob,
    Completion,
    CronDefinition,
    CronRecord,
    HandlerDefinition,
    JobRecord,
    LeaseReport,
    NewJob,
    Stats,
)
from .registry import Registry
from .retention import Retention
from .tables import Tables, build_tables

__all__ = [
    "AttemptRecord",
    "ClaimedJob",
    "Completion",
    "CronDefinition",
    "CronRecord",
    "Database",
    "FireResult",
    "HandlerDefinition",
    "JobFilter",
    "JobRecord",
    "LeaseReport",
    "NewJob",
    "Stats",
    "Store",
    "Tables",
]


class Store:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.enqueue = Enqueuer(db, clock)
        self.claims = Claims(db, clock)
        self.leases = Leases(db, clock)
        self.control = Control(db, clock)
        self.registry = Registry(db, clock)
        self.queries = Queries(db, clock)
        self.retention = Retention(db, clock)
        self.crons = Crons(db, clock)

    @classmethod
    def connect(
        cls,
        url: str | URL | None = None,
        *,
        table_prefix: str | None = None,
        schema: str | None = None,
        clock: Clock = utcnow,
    ) -> Store:
        engine = create_job_engine(resolve_database_url(url))
        tables = build_tables(resolve_table_prefix(table_prefix), resolve_schema(schema))
        return cls(Database(engine, tables), clock)

    @property
    def tables(self) -> Tables:
        return self.db.tables

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
