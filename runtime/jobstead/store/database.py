"""Engines set up for job traffic on each backend."""

from __future__ import annotations

import json
import json.scanner
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from .tables import Tables


@dataclass(frozen=True)
class Database:
    """An engine plus the tables of one Jobstead installation in it."""

    engine: Engine
    tables: Tables

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"


_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed types it as its own class


def load_jsonb(data: bytes) -> Any:
    """PostgreSQL's jsonb text to Python, for every jsonb value psycopg reads.

    Straight to the C scanner that ``json.loads`` ends in, without its Python
    layers (encoding detection, whitespace skipping): the server always sends
    one value, UTF-8, nothing around it. A worker decodes one per job, and
    those layers were most of the cost. Anything unexpected takes the slow,
    strict path (and its error message).
    """
    text = data.decode()
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def create_job_engine(url: URL, **options: Any) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **options)
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 20)
    options.setdefault("json_deserializer", load_jsonb)
    if url.get_backend_name() == "postgresql" and "options" not in url.query and "PGOPTIONS" not in os.environ:
        # Timestamps come back already in UTC (as_utc has nothing to do), whatever
        # the server's zone. Only a speed-up: every value is timestamptz, so no
        # result depends on it, nor on a pooler keeping the setting.
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("options", "-c TimeZone=UTC")
        options["connect_args"] = connect_args
    return create_engine(url, **options)


def _sqlite_engine(url: URL, **options: Any) -> Engine:
    """SQLite as a single-writer queue.

    Every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
    front, so two workers can never both read "2 running" and both claim the
    third slot; they queue on the lock (``busy_timeout``) instead of failing
    half-way with SQLITE_BUSY. WAL lets readers (the CLI, ``wait``) run beside
    the writer.
    """
    memory = url.database in (None, "", ":memory:")
    connect_args = dict(options.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", 30)
    if memory:
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
