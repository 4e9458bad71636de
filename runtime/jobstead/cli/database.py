"""Which database a command talks to, said in one line; and opening one that must already exist.

A connection that fails is the most common first error (wrong port, wrong
database name, a path in the wrong directory). The user gets one line naming
the database as they configured it (host, port, database name and user, or
the SQLite file; never the password) and what the driver said, exit 2.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ..store import Store
from ..store.drivers import driver_for
from ..store.presence import schema_state
from .errors import UsageError


def describe(url: URL) -> str:
    """The database as the user configured it, never the password (the driver knows how to say it)."""
    return driver_for(url).describe(url)


def sqlite_path(url: URL) -> str | None:
    """The file an embedded database lives in (None for a server or in-memory)."""
    return driver_for(url).database_file(url)


def failure_line(exc: DBAPIError, url: URL) -> str:
    """What the driver said, first line only, with any password taken out.

    A database file that could not be created is explained by its directory
    (SQLite says only "unable to open database file").
    """
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            return f"cannot create the {describe(url)}: its directory {directory} does not exist"
        if not os.access(directory, os.W_OK):
            return f"cannot create the {describe(url)}: its directory {directory} is not writable"
    detail = str(exc.orig).strip() if exc.orig is not None else str(exc)
    detail = " ".join(detail.splitlines()[:1]) or type(exc.orig).__name__
    detail = detail.removeprefix("connection failed: ")
    if url.password:
        detail = detail.replace(str(url.password), "***")
    return f"cannot use the {describe(url)}: {detail}"


def existing_store(store: Store) -> Store:
    """``store`` if the database and its Jobstead schema exist; else a UsageError saying which is missing.

    Creates nothing: a SQLite file is looked for before the first connection
    (which would create it), and the schema is inspected, never migrated.
    """
    url = store.db.engine.url
    path = store.db.driver.database_file(url)
    if path is not None and not os.path.exists(path):
        raise UsageError(
            f"database {path} does not exist: point --database-url (or $JOBSTEAD_DATABASE_URL) at your app's "
            "database, or create it with `jobstead migrate`"
        )
    state = schema_state(store.db)
    where = f"{describe(url)} (table prefix {store.tables.prefix!r}"
    where += f", schema {store.tables.schema!r})" if store.tables.schema else ")"
    if state == "missing":
        raise UsageError(f"no Jobstead schema in the {where}: run `jobstead migrate`, or check --database-url")
    if state == "outdated":
        raise UsageError(f"the Jobstead schema in the {where} is older than this version: run `jobstead migrate`")
    return store
