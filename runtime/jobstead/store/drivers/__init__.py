"""Choosing the driver for a database URL: the one place that knows which databases exist.

Adding a backend: write ``drivers/<name>.py`` with a ``Driver`` subclass (start
from ``base.Driver``, whose generic SQL is correct everywhere), add it to
``DRIVERS`` below, and run ``tests/store`` (the store conformance suite)
against it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from ...errors import ConfigurationError
from .base import Driver

__all__ = ["DRIVERS", "Driver", "driver_for", "known_backends"]


def _postgresql() -> Driver:
    # Imported on first use: SQLite users never load psycopg.
    from .postgresql import PostgreSQLDriver

    return PostgreSQLDriver()


def _mysql() -> Driver:
    from .mysql import MySQLDriver

    return MySQLDriver()


def _sqlite() -> Driver:
    from .sqlite import SQLiteDriver

    return SQLiteDriver()


#: Backend name (SQLAlchemy's ``url.get_backend_name()``) -> how to make its driver.
#: MySQL and MariaDB share a driver: SQLAlchemy names MariaDB URLs ``mariadb``.
DRIVERS: dict[str, Any] = {"postgresql": _postgresql, "sqlite": _sqlite, "mysql": _mysql, "mariadb": _mysql}
_made: dict[str, Driver] = {}


def known_backends() -> list[str]:
    return sorted(DRIVERS)


def driver_for(url: URL) -> Driver:
    """The driver of ``url``'s database; a clear error for one Jobstead does not run on."""
    backend = url.get_backend_name()
    driver = _made.get(backend)
    if driver is None:
        make = DRIVERS.get(backend)
        if make is None:
            raise ConfigurationError(
                f"unsupported database {backend!r}: Jobstead runs on " + " or ".join(known_backends())
            )
        driver = _made[backend] = make()
    return driver
