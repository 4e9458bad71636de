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

from sqlalchemy import ColumnElement, Engine, Table, create_engine, event, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from .base import Driver


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
        engine = create_engine(url, connect_args=connect_args, **options)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to the "begin" hook below (pysqlite would
            # otherwise BEGIN lazily, DEFERRED, only before the first write).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    permanent_errors: ClassVar[tuple[str, ...]] = ("unable to open database file", "file is not a database")

    def database_file(self, url: URL) -> str | None:
        """The absolute path of a file-backed SQLite URL (None for ``:memory:``)."""
        if url.database in (None, "", ":memory:") or url.database.startswith("file:"):
            return None
        return os.path.abspath(url.database)

    def describe(self, url: URL) -> str:
        return f"SQLite file {self.database_file(url) or ':memory:'}"

    def upsert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def minute_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.strftime("%Y-%m-%d %H:%M", column)
