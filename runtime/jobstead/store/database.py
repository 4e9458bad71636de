"""One Jobstead installation in one database: its engine, its tables, and the driver that speaks to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from .drivers import Driver, driver_for
from .tables import Tables


@dataclass(frozen=True)
class Database:
    engine: Engine
    tables: Tables
    driver: Driver

    def describe(self) -> str:
        """Where this database is, for messages: never the password."""
        return self.driver.describe(self.engine.url)


def open_database(url: URL, tables: Tables, **engine_options: Any) -> Database:
    """An engine for ``url`` set up by its driver (pools, connection settings, transaction style)."""
    driver = driver_for(url)
    return Database(driver.create_engine(driver.normalize_url(url), **engine_options), tables, driver)
