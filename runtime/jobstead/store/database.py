"""One Jobstead installation in one database: its engine, its tables, and the driver that speaks to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from .drivers import Driver, driver_for
from .drivers import base as drivers_base
from .tables import Tables


@dataclass(frozen=True)
class Database:
    engine: Engine
    tables: Tables
    driver: Driver

    def describe(self) -> str:
        """Where this database is, for messages: never the password."""
        return self.driver.describe(self.engine.url)

    @contextmanager
    def begin_bounded(self) -> Iterator[Connection]:
        """``engine.begin()`` whose locks a frozen client holds for ``LOCK_BOUND_SECONDS``, not for
        as long as it stays frozen (``Driver.bound_locks``).

        For transactions that lock rows other processes wait on (a cron's row
        while it fires, a handler's row that every limited claim locks): without
        the bound a scheduler frozen mid-fire stopped every other scheduler's
        crons, and a worker frozen while publishing its handlers stopped every
        limited claim of them, for the whole freeze. One round trip more, off
        every hot path.
        """
        with self.engine.begin() as conn:
            self.driver.bound_locks(conn, drivers_base.LOCK_BOUND_SECONDS)
            yield conn


def open_database(url: URL, tables: Tables, **engine_options: Any) -> Database:
    """An engine for ``url`` set up by its driver (pools, connection settings, transaction style)."""
    driver = driver_for(url)
    return Database(driver.create_engine(driver.normalize_url(url), **engine_options), tables, driver)
