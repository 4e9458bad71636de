"""MySQL 8.0+ and MariaDB 10.6+, through mysqlclient (the ``mysql`` extra).

What differs from the generic driver, and why:

* URLs: ``mysql://`` and ``mariadb://`` mean mysqlclient (``+mysqldb``), as
  SQLAlchemy has it; ``+pymysql`` is kept if asked for; an async form
  (``+asyncmy``, ``+aiomysql``), which an app uses for its own async sessions,
  gives Jobstead's engine the extra's sync client on the same server, as one
  ``postgresql://`` URL serves both on PostgreSQL.
* Sessions: UTC (``time_zone``), strict SQL mode, READ COMMITTED (InnoDB's
  default REPEATABLE READ takes gap locks that make concurrent claims and
  defers deadlock, and reads a snapshot where PostgreSQL reads what is
  committed). A server older than MySQL 8.0 or MariaDB 10.6 (no ``SKIP
  LOCKED``) is refused at connect, naming the version needed.
* Upserts: ``ON DUPLICATE KEY UPDATE``, and ``INSERT IGNORE`` for "do nothing"
  (MariaDB returns only the rows it inserted, as PostgreSQL's ``ON CONFLICT DO
  NOTHING RETURNING`` does).
* ``UPDATE ... RETURNING`` does not exist: ``execute_update`` locks the rows
  (``SELECT ... FOR UPDATE``), updates them by primary key and reads them back,
  in the caller's transaction.
* Bound locks: ``innodb_lock_wait_timeout`` and the session's idle timeouts
  per transaction; migrations serialise on ``GET_LOCK``.
* No LISTEN/NOTIFY: workers poll, and a running job hears of its cancellation
  at its worker's next lease renewal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Result,
    Select,
    Table,
    TextClause,
    Update,
    bindparam,
    create_engine,
    event,
    false,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from ...clock import as_utc
from ...errors import ConfigurationError
from ...status import JobStatus
from ..records import Completion
from .base import LOCK_BOUND_SECONDS, Applied, Driver

if TYPE_CHECKING:
    from ..database import Database

#: The sync DBAPIs Jobstead's engine may use, by SQLAlchemy driver name.
SYNC_CLIENTS = ("mysqldb", "pymysql")
#: Async DBAPIs an app may name in the one URL; Jobstead's own engine then uses mysqlclient.
ASYNC_CLIENTS = ("asyncmy", "aiomysql")
#: The oldest servers with ``FOR UPDATE SKIP LOCKED`` and ``INSERT ... RETURNING`` semantics Jobstead relies on.
MIN_MYSQL = (8, 0)
MIN_MARIADB = (10, 6)
CONNECT_TIMEOUT_SECONDS = 10
#: How long a connection may sit in the pool before it is replaced (servers end idle ones, 8 h by default).
POOL_RECYCLE_SECONDS = 3600


def server_version(version: str) -> tuple[str, tuple[int, int]]:
    """``("MariaDB" | "MySQL", (major, minor))`` from ``SELECT VERSION()``.

    MariaDB before 11 may prefix its version with ``5.5.5-`` for old clients.
    """
    text_ = version.removeprefix("5.5.5-")
    match = re.match(r"(\d+)\.(\d+)", text_)
    if match is None:
        raise ConfigurationError(f"cannot read the database server's version from {version!r}")
    numbers = (int(match.group(1)), int(match.group(2)))
    return ("MariaDB" if "mariadb" in text_.lower() else "MySQL"), numbers


def check_server_version(version: str) -> None:
    """Refuse a server without what Jobstead needs, with one line naming the version needed."""
    name, numbers = server_version(version)
    needed = MIN_MARIADB if name == "MariaDB" else MIN_MYSQL
    if numbers < needed:
        raise ConfigurationError(
            f"{name} {numbers[0]}.{numbers[1]} is too old for Jobstead: it needs {name} "
            f"{needed[0]}.{needed[1]} or later (FOR UPDATE SKIP LOCKED)"
        )
    if name == "MySQL":  # refused here, in one line, rather than by the first defer's SQL error
        raise ConfigurationError(
            f"MySQL {numbers[0]}.{numbers[1]} is not supported yet: Jobstead's writes need INSERT ... RETURNING, "
            "which MySQL lacks; use MariaDB 10.6 or later, or PostgreSQL"
        )


class Upsert(mysql.Insert):
    """MySQL's INSERT with PostgreSQL's and SQLite's ``on_conflict_*`` spelling, which the store uses.

    The conflict target is not given to MySQL (``ON DUPLICATE KEY`` reacts to
    any unique key); every store upsert has one unique key a conflict can be on.
    """

    inherit_cache = True

    @property
    def excluded(self) -> Any:
        return self.inserted

    def on_conflict_do_nothing(self, **_target: Any) -> Upsert:
        return self.prefix_with("IGNORE")

    def on_conflict_do_update(
        self, *, set_: dict[str, Any], where: ColumnElement[bool] | None = None, **_target: Any
    ) -> Upsert:
        if where is None:
            return self.on_duplicate_key_update(set_)
        # Each assignment keeps the old value unless ``where`` holds for the existing row. MySQL
        # applies assignments in order, each seeing the ones before: the columns ``where``
        # reads are assigned last, so it is read as the row was.
        read = {col.key for col in _columns_in(where)}

        # Its values inline: mysqlclient's executemany (many rows in one INSERT) takes no
        # parameters after the VALUES list.
        def inlined(element: Any, **_: Any) -> Any:
            if not isinstance(element, BindParameter):
                return None
            sql = element.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True})
            return literal_column(str(sql), element.type)

        inline = visitors.replacement_traverse(where, {}, inlined)
        keys = sorted(set_, key=lambda k: k in read)
        table = self.table
        return self.on_duplicate_key_update([(k, func.if_(inline, set_[k], table.c[k])) for k in keys])


def _columns_in(expression: ColumnElement[Any]) -> Iterator[Any]:
    for element in visitors.iterate(expression):
        if getattr(element, "table", None) is not None and hasattr(element, "key"):
            yield element


class MySQLDriver(Driver):
    backend: ClassVar[str] = "mysql"
    skip_locked: ClassVar[bool] = True
    server_clock: ClassVar[bool] = True
    locking_reads_see_later_commits: ClassVar[bool] = True

    def normalize_url(self, url: URL) -> URL:
        backend = url.get_backend_name()
        client = url.get_driver_name()
        if "+" not in url.drivername or client in ASYNC_CLIENTS:
            url = url.set(drivername=f"{backend}+mysqldb")
        elif client not in SYNC_CLIENTS:
            raise ConfigurationError(
                f"{backend}+{client}:// is not supported: use {backend}:// (mysqlclient), {backend}+pymysql://, "
                f"or {backend}+asyncmy:// for an app's async sessions"
            )
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url

    permanent_errors: ClassVar[tuple[str, ...]] = (
        "access denied",  # 1045 wrong password, 1044 no access to the database
        "unknown database",  # 1049
        "too old for jobstead",
    )

    #: Server error codes that a retry cures: the server went away or restarted, the connection
    #: was lost, InnoDB chose this transaction as a deadlock victim or its lock wait timed out.
    TRANSIENT_CODES: ClassVar[frozenset[int]] = frozenset({1205, 1213, 2002, 2003, 2006, 2013, 2055, 1927, 1053})

    def is_transient(self, exc: BaseException) -> bool:
        from sqlalchemy.exc import DBAPIError

        orig = getattr(exc, "orig", None)
        args = getattr(orig, "args", ())
        if isinstance(exc, DBAPIError) and args and args[0] in self.TRANSIENT_CODES:
            return True
        return super().is_transient(exc)

    def describe(self, url: URL) -> str:
        where = f"{url.host or 'localhost'}:{url.port or 3306}"
        user = f" as {url.username}" if url.username else ""
        return f"MySQL database {url.database!r} on {where}{user}"

    def create_engine(self, url: URL, **options: Any) -> Engine:
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 20)
        options.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
        # A pooled connection the server has dropped (a restart, wait_timeout) is found by a
        # ping (COM_PING, no SQL) as it is taken, and replaced, instead of failing the caller's
        # statement with "server has gone away".
        options.setdefault("pool_pre_ping", True)
        options.setdefault("isolation_level", "READ COMMITTED")
        connect_args = dict(options.pop("connect_args", {}))
        if "connect_timeout" not in url.query:
            connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        connect_args.setdefault("init_command", SESSION_SETUP)
        options["connect_args"] = connect_args
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _set_up_session)
        event.listen(engine, "checkin", _release_locks)
        return engine

    # -- SQL that differs ----------------------------------------------------

    def upsert(self, table: Table) -> Any:
        return Upsert(table)

    def id_in(self, column: ColumnElement[Any], ids: Select[Any]) -> ColumnElement[bool]:
        # MySQL takes no LIMIT in an IN subquery, nor the updated table in its own subquery:
        # through a derived table it takes both (the ids are read first, then matched).
        derived = ids.subquery("chosen")
        return column.in_(select(derived.c[0]))

    def minute_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.date_format(column, literal_column("'%Y-%m-%d %H:%i'"))

    def lock_for_prune(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.with_for_update(skip_locked=True)

    def server_now(self, conn: Connection) -> datetime | None:
        value = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
        assert isinstance(value, datetime)
        return as_utc(value)

    def bound_locks(self, conn: Connection, seconds: float) -> None:
        # MariaDB ends a transaction whose client stays silent this long (as PostgreSQL's
        # idle_in_transaction_session_timeout), rolling it back and freeing its locks; MySQL has
        # no such setting, so there only our own lock waits are bounded. A session setting (no
        # transaction-local form): it stays on the pooled connection, which only ever holds
        # Jobstead's own short transactions.
        whole = max(1, math.ceil(seconds))
        if getattr(conn.dialect, "is_mariadb", False):
            conn.execute(_MARIADB_BOUND, {"s": whole})
        else:
            conn.execute(_MYSQL_BOUND, {"s": whole})

    def lock_schema(self, conn: Connection, *, schema: str | None, prefix: str) -> None:
        # A session lock (MySQL has no transaction-scoped one), released when the migration's
        # connection goes back to the pool (``_release_locks``), after its commit.
        name = f"jobstead-migrate:{schema}:{prefix}"[:64]
        got = conn.execute(text("SELECT GET_LOCK(:name, 600)"), {"name": name}).scalar()
        if got != 1:
            raise ConfigurationError(f"could not take the migration lock {name!r} within 600 s")
        conn.info[_HOLDS_LOCKS] = True
        if schema:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{schema}`"))

    def lock_rows(self, conn: Connection, stmt: Select[Any], table: Table, *, skip_locked: bool) -> Result[Any]:
        """Keys first without locks, then those rows locked through the primary key, then read.

        InnoDB keeps every row a locking read reached through a secondary index
        and then passed over locked until commit, READ COMMITTED or not (MariaDB
        10.11, measured): a rescue's ``status = 'running' AND lease_expires_at <
        now FOR UPDATE SKIP LOCKED`` locked every running job, the live ones too,
        and their workers' renewals and completions waited for the rescue to
        commit, long enough under load to lose their leases. A row reached
        through the primary key and passed over by the conditions is let go at
        once, so the lock names the keys read (``FORCE INDEX``: the planner
        could prefer the status index again) and checks the conditions again,
        for rows that changed in between.
        """
        (pk,) = table.primary_key.columns
        keys = list(conn.execute(stmt.with_only_columns(pk)).scalars())
        if not keys:
            return conn.execute(stmt.where(false()))
        lock = select(pk).with_hint(table, _BY_PRIMARY_KEY).where(pk.in_(keys))
        if stmt.whereclause is not None:
            lock = lock.where(stmt.whereclause)
        locked = list(conn.execute(lock.order_by(pk).with_for_update(skip_locked=skip_locked)).scalars())
        return conn.execute(stmt.where(pk.in_(locked) if locked else false()))

    def execute_update(
        self, conn: Connection, stmt: Update, params: dict[str, Any] | None = None
    ) -> Result[*tuple[Any, ...]]:
        """``UPDATE ... RETURNING`` as three statements in ``conn``'s transaction: lock the rows
        (``FOR UPDATE``, as the UPDATE would), update them by primary key, read them back.

        Every such update of the store names its rows by primary key (a lease's
        job, the ids a claim chose, a cron's name), and the lock goes through it
        (``FORCE INDEX``): through another index, or a scan of a small table, it
        would wait on every locked row it passed and keep those it passed over
        locked (see ``lock_rows``), and a worker's renewal of its own jobs waited
        for a rescue of another worker's.
        """
        returning = stmt._returning
        if not returning:
            return conn.execute(stmt, params or {})
        table = stmt.table
        assert isinstance(table, Table)
        (pk,) = table.primary_key.columns
        lock = select(pk).with_hint(table, _BY_PRIMARY_KEY).with_for_update()
        if stmt.whereclause is not None:
            lock = lock.where(stmt.whereclause)
        given = params or {}
        ids = list(conn.execute(lock, given).scalars())
        if not ids:
            return conn.execute(select(*returning).where(false()))
        values = {getattr(col, "key", col): value for col, value in (stmt._values or {}).items()}
        conn.execute(update(table).where(pk.in_(ids)).values(values), given)
        return conn.execute(select(*returning).where(pk.in_(ids)).order_by(pk))

    def complete(self, db: Database, conn: Connection, completions: Sequence[Completion]) -> Applied:
        """Three statements for the whole batch, however many jobs it ends: lock and read the rows,
        update the ones whose lease held, log the attempts that are logged.

        One statement per job (the generic way: lock, update, read back, log)
        made a completion transaction of 25 jobs a third of a second under load,
        and the worker's next renewal, which names the rows of the completions
        queued meanwhile, waited for it. The update joins the rows to the batch
        sent as one JSON array (``JSON_TABLE``): one statement text whatever the
        batch size. Every value written is the one ``Completion`` states.
        """
        self.bound_locks(conn, LOCK_BOUND_SECONDS)
        jobs = db.tables.jobs
        by_id = {c.job_id: c for c in completions}
        rows = conn.execute(
            select(
                jobs.c.id,
                jobs.c.lease_owner,
                jobs.c.attempts,
                jobs.c.status,
                jobs.c.started_at,
                jobs.c.batch_id,
                jobs.c.workflow_id,
                jobs.c.step,
            )
            .with_hint(jobs, _BY_PRIMARY_KEY)
            .where(jobs.c.id.in_(sorted(by_id)))
            .order_by(jobs.c.id)  # the order renewals lock in
            .with_for_update()
        ).all()
        held = [
            (by_id[row.id], row)
            for row in rows
            if (row.lease_owner, row.attempts, row.status)
            == (by_id[row.id].owner, by_id[row.id].attempt, JobStatus.RUNNING.value)
        ]
        if not held:
            return Applied()
        conn.execute(
            _complete_statement(conn.dialect.identifier_preparer.format_table(jobs)),
            {"batch": json.dumps([_completed_row(c) for c, _ in held]), "ids": [c.job_id for c, _ in held]},
        )
        logged = [
            {
                "job_id": c.job_id,
                "attempt": c.attempt,
                "worker_id": c.owner,
                "started_at": row.started_at,
                "finished_at": c.finished_at,
                "outcome": c.outcome.value,
                "error": c.error.to_json() if c.error else None,
            }
            for c, row in held
            if c.logged
        ]
        if logged:
            conn.execute(insert(db.tables.attempts), logged)
        return Applied(
            batches={c.job_id: row.batch_id for c, row in held},
            workflows={
                c.job_id: int(row.workflow_id)
                for c, row in held
                if row.workflow_id is not None and row.step is not None
            },
        )


def _completed_row(c: Completion) -> list[Any]:
    """One completion as ``_complete_statement`` reads it: JSON values as their text, times as UTC text."""
    return [
        c.job_id,
        c.status.value,
        json.dumps(c.result) if c.keeps_result else None,
        1 if c.keeps_result else 0,
        json.dumps(c.error.to_json()) if c.error is not None else None,
        _utc_text(c.run_at),
        _utc_text(c.final_at),
        c.kept_owner,
    ]


def _utc_text(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _complete_statement(jobs: str) -> TextClause:
    """The jobs ``ids`` names (already locked, reached through the primary key: a multi-table
    UPDATE reads without semi-consistency, and a scan would wait on every row another
    transaction holds; two completions of one batch deadlocked so) joined to the batch, one JSON
    array of ``_completed_row`` (a JSON null is SQL NULL), and set as each completion states."""
    return text(
        f"UPDATE {jobs} AS j FORCE INDEX (PRIMARY) JOIN JSON_TABLE(:batch, '$[*]' COLUMNS ("
        "id BIGINT PATH '$[0]', status VARCHAR(16) PATH '$[1]', result LONGTEXT PATH '$[2]', "
        "keeps_result INT PATH '$[3]', error LONGTEXT PATH '$[4]', run_at DATETIME(6) PATH '$[5]', "
        "final_at DATETIME(6) PATH '$[6]', kept_owner VARCHAR(64) PATH '$[7]')) AS done ON done.id = j.id "
        "SET j.status = done.status, j.lease_owner = done.kept_owner, j.lease_expires_at = NULL, "
        "j.cancel_requested = 0, j.finished_at = done.final_at, "
        "j.result = IF(done.keeps_result = 1, done.result, j.result), "
        "j.error = COALESCE(done.error, j.error), j.run_at = COALESCE(done.run_at, j.run_at) "
        "WHERE j.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))


_BY_PRIMARY_KEY = "FORCE INDEX (PRIMARY)"
_MARIADB_BOUND = text("SET SESSION idle_transaction_timeout = :s, innodb_lock_wait_timeout = :s")
_MYSQL_BOUND = text("SET SESSION innodb_lock_wait_timeout = :s")
_HOLDS_LOCKS = "jobstead_holds_named_locks"


def _release_locks(dbapi_connection: Any, record: Any) -> None:
    """A connection that took a named lock (``lock_schema``) gives it up as it goes back to the pool."""
    if dbapi_connection is not None and record.info.pop(_HOLDS_LOCKS, False):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("DO RELEASE_ALL_LOCKS()")
        finally:
            cursor.close()


def _set_up_session(dbapi_connection: Any, _record: Any) -> None:
    """Each new connection: a server Jobstead can run on."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT VERSION()")
        (version,) = cursor.fetchone()
        check_server_version(version if isinstance(version, str) else version.decode())
    finally:
        cursor.close()


#: Run by the client library as each connection opens, so SQLAlchemy, which reads the SQL mode
#: when it first connects, knows it: UTC, strict, and ANSI_QUOTES (the store's few SQL
#: fragments quote identifiers the standard way, ``"key"``, a reserved word here).
SESSION_SETUP = (
    "SET SESSION time_zone = '+00:00', sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,ANSI_QUOTES'"
)
