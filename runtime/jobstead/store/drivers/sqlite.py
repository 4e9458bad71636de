"""SQLite: the embedded default, a single-writer queue on one file.

Every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
front, so two workers can never both read "2 running" and both claim the
third slot; they queue on the lock (``busy_timeout``) instead of failing
half-way with SQLITE_BUSY. WAL lets readers (the CLI, ``wait``) run beside
the writer. There is no LISTEN/NOTIFY: workers poll.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from sqlalchemy import ColumnElement, Engine, Table, create_engine, event, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from .base import READ_ONLY, Driver


class SQLiteDriver(Driver):
    backend: ClassVar[str] = "sqlite"

    def create_engine(self, url: URL, **options: Any) -> Engine:
        memory = url.database in (None, "", ":memory:")
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", 30)
        if memory:  # one connection is the database: there is no pool to size
            options.pop("pool_size", None)
            options.pop("max_overflow", None)
            options.setdefault("poolclass", StaticPool)
        read_only = _read_only_uri(self.database_file(url))
        if read_only is not None:
            url = url.set(database=read_only, query={**url.query, "uri": "true"})
        engine = create_engine(url, connect_args=connect_args, **options)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to the "begin" hook below (pysqlite would
            # otherwise BEGIN lazily, DEFERRED, only before the first write).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not memory and read_only is None:  # WAL is a write; a read-only file is left as it is
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A read-only file cannot take the write lock: its readers begin deferred, as does a
            # connection that only reads (``READ_ONLY``): in WAL mode it never waits for a writer.
            reads = read_only is not None or connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")

        return engine

    permanent_errors: ClassVar[tuple[str, ...]] = ("unable to open database file", "file is not a database")

    def database_file(self, url: URL) -> str | None:
        """The absolute path of a file-backed SQLite URL (None for ``:memory:``)."""
        if url.database in (None, "", ":memory:"):
            return None
        if url.database.startswith("file:"):  # a URI, such as the read-only one below
            path, _, query = url.database.removeprefix("file:").partition("?")
            if path in ("", ":memory:") or "mode=memory" in query:
                return None
            return os.path.abspath(unquote(path))
        return os.path.abspath(url.database)

    def describe(self, url: URL) -> str:
        return f"SQLite file {self.database_file(url) or ':memory:'}"

    def upsert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def minute_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.strftime("%Y-%m-%d %H:%M", column)


def _read_only_uri(path: str | None) -> str | None:
    """A read-only URI for a database file this process cannot write, else None.

    Read-only tools (``jobs list``, ``stats``, the dashboard with
    ``--read-only``) must work on a file shipped read-only or in a directory
    they cannot write: opened normally, the WAL pragma and ``BEGIN IMMEDIATE``
    are writes, and WAL wants its ``-shm`` file beside the database. With no
    ``-shm`` file there, no process has the database open in WAL mode, and in a
    directory nobody here can write none can start to: ``immutable=1`` reads it
    without the shared-memory file. Writes then fail with SQLite's own
    "attempt to write a readonly database".
    """
    if path is None or not os.path.exists(path):
        return None
    directory = os.path.dirname(path) or "."
    if os.access(path, os.W_OK) and os.access(directory, os.W_OK):
        return None
    uri = f"file:{quote(path)}?mode=ro"
    if not os.path.exists(f"{path}-shm") and not os.access(directory, os.W_OK):
        uri += "&immutable=1"
    return uri
