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
from ..store.presence import schema_state
from .errors import UsageError


def describe(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {sqlite_path(url) or ':memory:'}"
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    user = f" as {url.username}" if url.username else ""
    return f"PostgreSQL database {url.database!r} on {where}{user}"


def sqlite_path(url: URL) -> str | None:
    """The absolute path of a file-backed SQLite URL (None for ``:memory:``)."""
    if url.database in (None, "", ":memory:") or url.database.startswith("file:"):
        return None
    return os.path.abspath(url.database)


def failure_line(exc: DBAPIError, url: URL) -> str:
    """What the driver said, first line only, with any password taken out."""
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
    path = sqlite_path(url) if store.db.is_sqlite else None
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
