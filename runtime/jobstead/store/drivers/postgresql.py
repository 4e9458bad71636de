"""PostgreSQL: the production backend, through psycopg 3.

What it does better than the generic driver, and why:

* Bulk inserts: jobs without a deduplication key go in by one statement of
  constant text per set of options, whatever the number of jobs: the
  arguments travel as one JSON array, which the server unpacks
  (``jsonb_array_elements``) into an ``INSERT ... SELECT`` that also sends the
  NOTIFY and returns only the new ids. Constant text means psycopg and
  PostgreSQL parse and plan it once per connection (SQLAlchemy's multi-row
  ``VALUES`` lists were parsed again for every batch: most of the bulk defer's
  time), and one JSON text is dumped by the C encoder instead of element by
  element. The records handed back are built from what was sent.
* A standalone defer runs without ``BEGIN``/``COMMIT`` (a single statement is
  its own transaction): one round trip instead of three.
* Completions: one statement for a worker's whole batch.
* Wake-ups: LISTEN/NOTIFY (``listen``), purely an accelerator: workers also poll.

Poolers (PgBouncer in transaction mode, RDS Proxy, CloudNativePG's pooler):
no session state is relied on. Nothing is sent as a startup parameter, and
server-side prepared statements, which a transaction pooler cannot keep, are
turned off by the URL option ``prepare_threshold=none`` (psycopg's own
parameter: prepare after N executions, or never). A LISTEN connection that
cannot receive notifications through such a pooler is detected by a probe
and given up, once, with one log line: polling alone still runs every job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import json.scanner
import logging
import uuid
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    Select,
    String,
    Table,
    TextClause,
    any_,
    bindparam,
    case,
    cast,
    create_engine,
    event,
    func,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import TypeEngine

from ...errors import ConfigurationError
from ..new_jobs import option_key
from ..records import Completion, JobRecord, NewJob
from ..rows import new_job_values, records_in_input_order, sent_record, status_at_defer
from .async_alone import AsyncAlone
from .base import CANCEL_PREFIX, LOCK_BOUND_SECONDS, WAKE_ALL, Applied, Driver, Params, Wake, bound
from .failover import discard_pool, follow_primary, is_failover, turned_read_only, when_connections_lost
from .pool import WaitingQueuePool
from .raw_statements import RawStatement, raw_dialect, render_raw

if TYPE_CHECKING:
    from ..database import Database
    from ..tables import Tables

logger = logging.getLogger("jobstead.store")

#: The URL query option Jobstead reads itself (and removes before psycopg sees the URL).
PREPARE_THRESHOLD_OPTION = "prepare_threshold"
#: libpq's connect_timeout unless the URL sets one.
CONNECT_TIMEOUT_SECONDS = 10
#: Payload wake-up messages never use as a queue name: the listener's own probe.
PROBE_PREFIX = "jobstead-probe:"
#: How long the listener waits for its probe before deciding notifications cannot reach it.
PROBE_SECONDS = 5.0
#: How often a quiet LISTEN connection checks that its server still takes writes (a failover
#: that leaves the old primary up, read-only, would otherwise keep it listening there).
PRIMARY_CHECK_SECONDS = 3.0

#: Only for ``create_connect_args``: how the engine's connections would be opened.
_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]

_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed types it as its own class


def load_jsonb(data: bytes) -> Any:
    """PostgreSQL's jsonb text to Python, for every jsonb value psycopg reads.

    Straight to the C scanner that ``json.loads`` ends in, without its Python
    layers (encoding detection, whitespace skipping): the server always sends
    one value, UTF-8, nothing around it. A worker decodes one per job, and
    those layers were most of the cost. Anything unexpected takes the slow,
    strict path (and its error message).
    """
    text_ = data.decode()
    try:
        value, end = _scan_json(text_, 0)
    except StopIteration:
        return json.loads(text_)
    if end != len(text_):
        return json.loads(text_)
    return value


def prepare_threshold(url: URL) -> int | None:
    """The URL's ``prepare_threshold``: an integer, or ``none`` for no prepared statements (poolers)."""
    raw = url.query.get(PREPARE_THRESHOLD_OPTION)
    if raw is None:
        return 5  # psycopg's default
    value = raw[-1] if isinstance(raw, tuple) else raw
    if value.strip().lower() in ("none", "off", "false", "disable", ""):
        return None
    try:
        threshold = int(value)
    except ValueError:
        raise ConfigurationError(
            f"database URL option {PREPARE_THRESHOLD_OPTION}={value!r}: give a whole number, "
            "or 'none' to turn prepared statements off (PgBouncer in transaction mode)"
        ) from None
    if threshold < 0:
        raise ConfigurationError(f"database URL option {PREPARE_THRESHOLD_OPTION}={value!r} must be >= 0 or 'none'")
    return threshold


def without_own_options(url: URL) -> URL:
    """The URL as libpq may see it: Jobstead's own query options removed."""
    return url.difference_update_query([PREPARE_THRESHOLD_OPTION])


def libpq_conninfo(url: URL) -> str:
    """The connection string of the engine's own connections, for the ones Jobstead opens itself.

    Built from the arguments SQLAlchemy's psycopg dialect gives the engine's
    connections, so the claim and LISTEN connections go to the same hosts in
    the same order (a multi-host URL, in either of its forms, included) with
    the same options (``target_session_attrs``, ``sslmode``, ...).
    """
    _, params = _DIALECT.create_connect_args(without_own_options(url))  # type: ignore[no-untyped-call]
    return make_conninfo("", **{str(k): v for k, v in params.items() if isinstance(v, str | int)})


def hosts(url: URL) -> list[str]:
    """``host:port`` of each host the URL names, in order (several: libpq tries them in turn)."""
    if url.host:
        return [f"{url.host}:{url.port or 5432}"]
    names, ports = url.query.get("host"), url.query.get("port")
    if names is None:
        return ["localhost:5432"]
    if isinstance(names, tuple):  # SQLAlchemy's own multi-host form: ?host=a:1&host=b:2
        listed = [name.partition(":") for name in names]
        return [f"{name}:{port or 5432}" for name, _, port in listed]
    host_list = names.split(",")
    port_list = (ports[-1] if isinstance(ports, tuple) else ports or "").split(",")
    if len(port_list) == 1:
        port_list *= len(host_list)  # one port for every host, as libpq reads it
    return [f"{name}:{(port_list[i] if i < len(port_list) else '') or 5432}" for i, name in enumerate(host_list)]


class PostgreSQLDriver(Driver):
    backend: ClassVar[str] = "postgresql"
    supports_listen: ClassVar[bool] = True
    skip_locked: ClassVar[bool] = True
    one_statement_claim: ClassVar[bool] = True
    server_clock: ClassVar[bool] = True
    keeps_plans: ClassVar[bool] = True

    def __init__(self) -> None:
        #: ``rows_alone``'s statements as rendered SQL, with the values their literals bind.
        self._rendered: dict[Select[Any] | TextClause, RawStatement] = {}
        self._raw_dialects: weakref.WeakKeyDictionary[Engine, Dialect] = weakref.WeakKeyDictionary()
        #: What each engine's connections are opened with (``async_alone`` opens its own likewise).
        self._connect_args: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()

    def normalize_url(self, url: URL) -> URL:
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if url.get_driver_name() != "psycopg":
            raise ConfigurationError("PostgreSQL URLs must use the psycopg driver (postgresql+psycopg://...)")
        prepare_threshold(url)  # a bad value fails here, where the URL is read
        return url

    permanent_errors: ClassVar[tuple[str, ...]] = (
        "password authentication failed",
        "no pg_hba.conf entry",
        "does not exist",  # database or role
        "invalid connection option",
        "permission denied",
        "no password supplied",
    )

    def is_transient(self, exc: BaseException) -> bool:
        # The server ended a transaction whose client fell silent (``bound_locks``): the
        # process was frozen; what it was doing was rolled back and may simply be done again.
        if isinstance(getattr(exc, "orig", exc), psycopg.errors.IdleInTransactionSessionTimeout):
            return True
        # A server that stopped taking writes (a failover): the primary is elsewhere now, or soon.
        if is_failover(exc):
            return True
        return super().is_transient(exc)

    def when_connections_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        return when_connections_lost(callback)

    def describe(self, url: URL) -> str:
        where = ",".join(hosts(url))
        user = f" as {url.username}" if url.username else ""
        return f"PostgreSQL database {url.database!r} on {where}{user}"

    def server(self, url: URL) -> str:
        # A multi-host URL has no ``url.host``: name every host, in the order libpq tries them.
        if url.host or "host" not in url.query:
            return super().server(url)
        return ",".join(hosts(url))

    def create_engine(self, url: URL, **options: Any) -> Engine:
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 20)
        # Wait for one of our own connections when the server has none left to give.
        options.setdefault("poolclass", WaitingQueuePool)
        options.setdefault("json_deserializer", load_jsonb)
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("prepare_threshold", prepare_threshold(url))
        if "connect_timeout" not in url.query:
            # A host that does not answer fails in seconds (then is retried), instead of hanging a start.
            connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        options["connect_args"] = connect_args
        engine = create_engine(without_own_options(url), **options)
        self._connect_args[engine] = connect_args
        event.listen(engine, "connect", _session_in_utc)
        follow_primary(engine, self.describe(url))
        return engine

    @contextmanager
    def alone(self, engine: Engine) -> Iterator[Connection]:
        # Autocommit: no BEGIN/COMMIT round trips, and the server releases the statement's
        # row locks when it completes, whatever the client does next. The pool gives the
        # connection its default (transactions) back when it is returned.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def rows_alone(self, engine: Engine, statement: Select[Any], params: Params) -> Sequence[Sequence[Any]]:
        """The statement's SQL rendered once, run on the pooled psycopg connection itself.

        For the claim: SQLAlchemy's execution layers (parameter processing, the
        result proxy, switching the pooled connection to autocommit) cost about
        as much client CPU as the claim's round trip, and the claim is on every
        job's way from defer to start. Statements given here bind no value that
        needs SQLAlchemy's type processing (text, numbers, arrays, aware times),
        and return none (psycopg decodes jsonb and timestamptz itself).
        """
        raw = self.rendered(engine, statement)
        return _fetch_autocommitted(engine, raw, lambda: raw.values(bound(params)))

    def async_alone(self, engine: Engine) -> AsyncAlone:
        return AsyncAlone(
            libpq_conninfo(engine.url),
            lambda statement: self.rendered(engine, statement),
            connect_options=dict(self._connect_args.get(engine, {})),  # as the engine's own connections
            json_loads=load_jsonb,
            describe=self.describe(engine.url),
        )

    def rendered(self, engine: Engine, statement: Select[Any] | TextClause) -> RawStatement:
        """``statement`` as ``rows_alone`` sends it, rendered once per engine (``raw_statements``)."""
        rendered = self._rendered.get(statement)
        if rendered is None:
            dialect = self._raw_dialects.get(engine)
            if dialect is None:
                dialect = self._raw_dialects[engine] = raw_dialect(engine)
            rendered = self._rendered[statement] = render_raw(statement, dialect)
        return rendered

    def in_bound_list(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        # = ANY(array): one statement text whatever the list's length, so nothing is rendered
        # again per execution (an expanding IN is) and the server plans it once.
        return column == any_(bindparam(name, type_=ARRAY(column.type)))

    def bound_list_rows(self, name: str, type_: TypeEngine[Any]) -> NamedFromClause | None:
        # unnest(array): a function's rows are estimated at a few, so a join from them goes
        # through the other side's index; the planner cannot see how many the array holds.
        return func.unnest(bindparam(name, type_=ARRAY(type_))).table_valued("value").render_derived(name=name)

    def bound_locks(self, conn: Connection, seconds: float) -> None:
        conn.execute(_BOUND_LOCKS, {"ms": _milliseconds(seconds)})

    def lock_bound_row(self, seconds_param: str) -> Select[Any] | None:
        # set_config(..., is_local => true) is SET LOCAL: it ends with the transaction, so it
        # is safe behind a transaction pooler (no session state), unlike a startup option.
        seconds = bindparam(seconds_param, type_=Float)
        ms = cast(cast(func.greatest(1, func.round(seconds * 1000)), Integer), String)
        return select(
            literal("bound", String),
            func.set_config(literal("idle_in_transaction_session_timeout", String), ms, True),
        )

    def unflushed_commit_row(self) -> Select[Any]:
        # synchronous_commit is read when the transaction commits, so a transaction-local
        # set_config (SET LOCAL, safe behind a pooler) in its first statement covers it;
        # the claim then costs no WAL flush (an fsync: most of a one-job claim's time).
        #
        # Not with a synchronous standby: a claim the standby has not received is undone by
        # a failover while its job runs, and the promoted standby hands the job to another
        # worker at once (seen: 3 s of two runs at once). There the claim commits as the
        # server commits everything else (its own synchronous_commit), so a job never starts
        # before the standby that may replace the primary knows who runs it. A primary
        # without synchronous standbys promises nothing across a failover anyway.
        unshipped_ok = func.current_setting(literal("synchronous_standby_names", String)) == literal("", String)
        level = case(
            (unshipped_ok, literal("off", String)),
            else_=func.current_setting(literal("synchronous_commit", String)),
        )
        return select(literal("unflushed", String), func.set_config(literal("synchronous_commit", String), level, True))

    # -- SQL that differs ----------------------------------------------------

    def upsert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def id_in(self, column: ColumnElement[Any], ids: Select[Any]) -> ColumnElement[bool]:
        # id = ANY(ARRAY(...)): the chosen ids become one array, and the statement finds them
        # through the primary key. With IN (subquery) the planner may hash-join against a scan
        # of the whole table instead (it did, at 20,000 queued jobs).
        return column == any_(func.array(ids.scalar_subquery()))

    def aware_times(self, *columns: ColumnElement[datetime]) -> list[ColumnElement[datetime]]:
        # timestamptz values come back aware from psycopg: the UTCDateTime conversion would
        # only cost a Python call per value, two per claimed job.
        return [type_coerce(column, DateTime(timezone=True)) for column in columns]

    def minute_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.date_trunc("minute", column)

    def refresh_planner_statistics(self, engine: Engine, qualified_table: str, *, lock_wait: float) -> bool:
        with self.alone(engine) as conn:
            row = conn.execute(_TABLE_SIZE, {"name": qualified_table}).first()
        if row is None:
            return False
        recorded_pages, recorded_rows, pages, owned = row
        if not owned or pages < _STATISTICS_MIN_PAGES:
            return False
        if recorded_rows >= 0 and pages < _STATISTICS_GROWTH * max(recorded_pages, 1):
            return False  # analyzed before (-1 rows: never), and not grown much since
        try:
            with engine.begin() as conn:
                self.bound_locks(conn, LOCK_BOUND_SECONDS)
                # The database's own analyze may hold the table: it is doing the same work.
                conn.execute(_ANALYZE_LOCK_TIMEOUT, {"ms": _milliseconds(lock_wait)})
                conn.execute(text(f"ANALYZE {qualified_table}"))
        except OperationalError as exc:
            if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                return False
            raise
        return True

    def estimated_rows(self, conn: Connection, qualified_table: str) -> int | None:
        estimate = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"), {"name": qualified_table}
        ).scalar()
        return None if estimate is None or estimate < 0 else int(estimate)

    def lock_for_prune(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.with_for_update(skip_locked=True)

    def notify(self, conn: Connection, channel: str, queues: Iterable[str]) -> None:
        # Delivered at commit: a rolled-back defer wakes no one. One prebuilt statement for all the
        # queues: a select built per call cost SQLAlchemy more than the round trip (0.6 ms of a
        # workflow's 3 ms defer).
        listed = list(queues)
        if listed:
            conn.execute(_NOTIFY, {"channel": channel, "queues": listed})

    def server_now(self, conn: Connection) -> datetime | None:
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(value, datetime)
        return value

    def lock_schema(self, conn: Connection, *, schema: str | None, prefix: str) -> None:
        # Transaction-scoped, so it also works behind PgBouncer in transaction mode.
        key = _crc32(f"jobstead-migrate:{schema}:{prefix}")
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        if schema:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

    # -- inserts -----------------------------------------------------------------

    def insert_plain(self, db: Database, conn: Connection, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        statement = _unnest_insert(db.tables)
        records: dict[int, JobRecord] = {}
        for positions in option_groups(jobs).values():
            group = [jobs[i] for i in positions]
            inserted = conn.execute(statement, _group_params(db.tables, group, now))
            records.update(zip(positions, records_in_input_order(inserted.scalars().all(), group, now), strict=True))
        return [records[i] for i in range(len(jobs))]

    def insert_each(self, db: Database, conn: Connection, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        """Jobs that differ in more than their arguments (a workflow's steps): one statement of
        constant text whatever their number, every row in one JSON array (``_recordset_insert``).

        The generic multi-row INSERT spent seconds on 10,000 steps in psycopg's
        parsing of its parameters; this takes milliseconds. Ids come back in
        input order (the rows are fed in order), the records are built from
        what was sent.
        """
        if not jobs:
            return []
        rows = [new_job_values(job, now) for job in jobs]
        statement = _recordset_insert(db.tables.jobs, tuple(rows[0]), "id")
        ids = sorted(conn.execute(statement, {"rows": _json_rows(rows)}).scalars().all())
        self.notify(conn, db.tables.notify_channel, sorted({j.queue for j in jobs}))
        return [sent_record(job_id, job, now) for job_id, job in zip(ids, jobs, strict=True)]

    def insert_many(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            conn.execute(_recordset_insert(table, tuple(rows[0]), None), {"rows": _json_rows(rows)})

    def insert_alone(self, db: Database, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        """One autocommitted statement, on the driver.

        It runs on the pooled psycopg connection directly: SQLAlchemy's
        connection, execution and result layers (and switching a pooled
        connection to autocommit through them) cost more client CPU than the
        statement itself, most of a single ``defer``. The connection goes back
        to the pool as it came (autocommit off), or is discarded if it broke.
        """
        insert = self.rendered(db.engine, _unnest_insert(db.tables))
        rows = _fetch_autocommitted(db.engine, insert, insert.values(_group_params(db.tables, jobs, now)))
        return records_in_input_order([row[0] for row in rows], jobs, now)

    def insert_workflow(
        self,
        db: Database,
        conn: Connection | None,
        workflow: dict[str, Any],
        steps: Sequence[NewJob],
        edges: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> tuple[int, dict[str, int]] | None:
        """Through data-modifying CTEs (``_workflow_insert``), one statement: a workflow defer was
        six round trips (BEGIN, the workflow, its steps, the NOTIFY, its edges, COMMIT), and the
        SQLAlchemy layers of each cost the deferring app more CPU than the server spent on it.
        Without ``conn`` it runs autocommitted on the pooled psycopg connection itself
        (``insert_alone``'s way): one round trip."""
        rows = [new_job_values(job, now) for job in steps]
        columns = tuple(column for column in rows[0] if column != "workflow_id")
        statement = _workflow_insert(db.tables, columns)
        values = {
            "workflow": _json_rows([workflow]),
            "rows": _json_rows([{c: row[c] for c in columns} for row in rows]),
            "edges": json.dumps([{"parent": parent, "child": child, "rule": rule} for parent, child, rule in edges]),
            "channel": db.tables.notify_channel,
            "queues": sorted({job.queue for job in steps}),
        }
        if conn is None:
            raw = self.rendered(db.engine, statement)
            found: Sequence[Sequence[Any]] = _fetch_autocommitted(db.engine, raw, raw.values(values))
        else:
            found = conn.execute(statement, values).all()
        if len(found) != len(steps):
            raise ValueError(f"{len(found)} steps written for {len(steps)}")
        return int(found[0][0]), {str(step): int(job_id) for _, job_id, step in found}

    # -- completions -----------------------------------------------------------

    def complete(self, db: Database, conn: Connection, completions: Sequence[Completion]) -> Applied:
        """One statement per worker for the whole batch: update the jobs, log the attempts.

        The batch travels as one JSON array (a short row per completion, times as
        epoch seconds, the worker once), dumped by the C encoder and unpacked by
        the server: constant statement text whatever the batch size (planned once
        per connection), and no per-element array escaping in Python, which was a
        tenth of a worker's time. Float seconds keep microseconds exactly at
        today's epochs (the server rounds them back to the microsecond). Every
        value written is the one ``Completion`` states (``final_at``,
        ``kept_owner``, ``logged``): the transition is decided once, in Python.
        """
        by_owner: dict[str, list[Completion]] = {}
        for c in completions:
            by_owner.setdefault(c.owner, []).append(c)
        statement = _complete_batch(db.tables)
        bound = _milliseconds(LOCK_BOUND_SECONDS)
        applied = Applied()
        for owner, batch in by_owner.items():
            rows = _completion_rows(batch)
            # One row of arrays, decoded by psycopg's C loaders: a row per job cost eight Python
            # calls each (SQLAlchemy's fetchone layers), on the path of every job.
            ids, in_batch, batch_ids, steps, workflow_ids = conn.execute(
                statement, {"owner": owner, "batch": rows, "bound": bound}
            ).one()
            applied.batches.update(dict.fromkeys(ids))
            applied.batches.update(zip(in_batch, batch_ids, strict=True))
            if steps:
                applied.workflows.update(zip(steps, workflow_ids, strict=True))
        return applied

    def complete_alone_then(
        self, db: Database, completions: Sequence[Completion], then: Select[Any], params: Params
    ) -> tuple[set[int], Sequence[Sequence[Any]]] | None:
        """BEGIN, the completion of the jobs in no batch and no workflow, ``then``, COMMIT: one
        pipeline on a pooled psycopg connection, one round trip instead of four.

        A hand-off's claim under a global limit (``Leases.complete``): each job cycle was
        four round trips, most of its time on a busy machine. Only one worker's completions
        (one statement). What the completions would settle (batches, workflows) must be
        settled in their own transaction: those jobs are left running here, for the caller
        to write as usual; so are those whose lease is gone.
        """
        owners = {c.owner for c in completions}
        if len(owners) != 1:
            return None
        complete = self.rendered(db.engine, _complete_batch(db.tables, plain_only=True))
        claim = self.rendered(db.engine, then)
        values = {"owner": owners.pop(), "batch": _completion_rows(completions)}
        values["bound"] = _milliseconds(LOCK_BOUND_SECONDS)
        with _pooled_driver(db.engine, complete.sql) as raw:
            try:
                with raw.pipeline():
                    done = psycopg.RawCursor(raw).execute(complete.sql, complete.values(values))
                    claimed = psycopg.RawCursor(raw).execute(claim.sql, claim.values(bound(params)))
                    raw.commit()
                row = done.fetchone()
                rows = claimed.fetchall()
            except BaseException:
                # Nothing of it was committed. A rollback that fails too (the connection is gone)
                # must not stand in for the error that says why: the connection is discarded anyway.
                with contextlib.suppress(psycopg.Error):
                    raw.rollback()
                raise
        return set(row[0] if row else []), rows

    # -- wake-ups --------------------------------------------------------------

    async def listen(
        self,
        url: URL,
        channel: str,
        queues: Collection[str] | None,
        wake: Wake,
        *,
        connected: Any = None,
        cancelled: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Call ``wake(queue)`` for each notification about ``queues`` (all when None), until cancelled.

        ``cancelled(job_ids)`` gets the ids of running jobs someone cancelled
        (a job or a batch): the worker running them stops them at once.

        ``queue`` is ``WAKE_ALL`` after (re)connecting: anything may be waiting.
        After each LISTEN the connection sends itself a probe; when the probe
        does not come back (a transaction pooler hands the LISTEN to a server
        connection this one no longer holds), listening stops for good with
        one warning, and the caller's polling carries on alone.

        A quiet connection checks every few seconds that its server still takes
        writes: after a failover that leaves the old primary running read-only,
        NOTIFYs are sent on the new one, so the listener moves there (one
        warning per move; polling carries on meanwhile).
        """
        backoff = 0.5
        moved = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    libpq_conninfo(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as conn:
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    if not await _probe(conn, channel):
                        logger.warning(
                            "LISTEN/NOTIFY does not reach this process through %s (a pooler in transaction "
                            "mode?): wake-ups are off, workers poll",
                            self.describe(url),
                        )
                        return
                    backoff = 0.5
                    if connected is not None:
                        connected()
                    wake(WAKE_ALL)  # anything deferred while we were not listening
                    while True:
                        async for note in conn.notifies(timeout=PRIMARY_CHECK_SECONDS):
                            payload = note.payload
                            if payload.startswith(PROBE_PREFIX):
                                continue
                            if payload.startswith(CANCEL_PREFIX):
                                if cancelled is not None:
                                    cancelled([int(i) for i in payload[len(CANCEL_PREFIX) :].split(",") if i])
                                continue
                            if queues is None or payload in queues or payload == WAKE_ALL:
                                wake(payload)
                        if await turned_read_only(conn):
                            if not moved:
                                logger.warning(
                                    "LISTEN: the server %s:%s stopped taking writes (a failover?); listening "
                                    "again on the primary, polling meanwhile",
                                    conn.info.host,
                                    conn.info.port,
                                )
                            moved = True
                            break
                        moved = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "LISTEN connection lost (%s); polling until it is back, retry in %.1f s",
                    _one_line(exc),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def _session_in_utc(dbapi_connection: Any, _record: Any) -> None:
    """Each new connection of Jobstead's engine talks UTC, as every time Jobstead stores is.

    Not for correctness (timestamps with a time zone are the same instants in
    any session zone) but for speed: in a session zone other than ``UTC``
    itself, even an alias such as ``Etc/UTC`` (Debian's default), psycopg
    converts every timestamp it loads through ``zoneinfo``, and every
    subtraction from a UTC time calls it again: 3 us per claimed job, a
    twentieth of a worker's time. A ``SET`` once per connection rather than a
    startup ``options`` parameter, which PgBouncer refuses; PgBouncer tracks
    ``TimeZone`` and sets it on whichever server connection it lends.
    """
    if dbapi_connection.info.parameter_status("TimeZone") == "UTC":
        return
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
    finally:
        dbapi_connection.autocommit = autocommit


def _fetch_autocommitted(engine: Engine, statement: RawStatement, params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` autocommitted on a pooled psycopg connection itself, without SQLAlchemy's layers.

    The connection goes back to the pool as it came (autocommit off), or is
    discarded if anything broke: whatever state it is in, no one else gets it.
    Errors come out as SQLAlchemy's wrappers, like every other store call's.

    A statement refused as read-only wrote nothing, and the pool that led to
    that server is gone with it (``failover``): it runs once more, on a fresh
    connection, which reaches the new primary if there is one by now. A defer
    or a claim made just after a failover then succeeds instead of failing.
    """
    try:
        return _fetch_once(engine, statement, params)
    except DBAPIError as exc:
        if not isinstance(exc.orig, psycopg.errors.ReadOnlySqlTransaction):
            raise
    return _fetch_once(engine, statement, params)


def _fetch_once(engine: Engine, statement: RawStatement, params: Any) -> list[tuple[Any, ...]]:
    """``params``: the positional values, or a function called for them once the connection is
    held (``Params``)."""
    with _pooled_driver(engine, statement.sql) as driver:
        driver.autocommit = True
        try:
            cursor = psycopg.RawCursor(driver)
            rows: list[tuple[Any, ...]] = cursor.execute(
                statement.sql, params() if callable(params) else params
            ).fetchall()
            return rows
        finally:
            driver.autocommit = False


@contextmanager
def _pooled_driver(engine: Engine, sql: str) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection's psycopg connection, used outside SQLAlchemy's execution.

    Whatever state it is left in by an error, no one else gets it: it is
    discarded (with the whole pool, on a failover, as ``follow_primary`` does),
    and the error comes out as SQLAlchemy's wrapper of it (naming ``sql``), like
    every other store call's.
    """
    pooled = engine.raw_connection()
    try:
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.Connection)
        yield driver
    except psycopg.Error as exc:
        if is_failover(exc):
            discard_pool(engine, pooled, exc, str(engine.url.database))
        else:
            pooled.invalidate()
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
    except BaseException:
        pooled.invalidate()
        raise
    finally:
        pooled.close()


async def _probe(conn: psycopg.AsyncConnection[Any], channel: str) -> bool:
    """Whether a NOTIFY this connection sends comes back to it."""
    token = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, token))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROBE_SECONDS
    while (left := deadline - loop.time()) > 0:
        async for note in conn.notifies(timeout=left, stop_after=1):
            if note.payload == token:
                return True
    return False


#: The table's pages as its statistics recorded them, its rows likewise (-1: never
#: analyzed), its pages now, and whether this role may analyze it (owns it).
_TABLE_SIZE = text(
    "SELECT c.relpages, c.reltuples, pg_relation_size(c.oid) / current_setting('block_size')::int, "
    "pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass(:name)"
)
#: Below this many pages (8 KiB each) every plan is cheap: not worth an ANALYZE.
_STATISTICS_MIN_PAGES = 16
#: A table this many times the size its statistics recorded has them gathered again. Each
#: gathering invalidates the plans made before it, so a plan scans at most this many
#: times the table it was made for; past a few doublings the plans use the indexes and
#: the database's own analyze keeps up.
_STATISTICS_GROWTH = 2
_NOTIFY = text("SELECT pg_notify(:channel, queue) FROM unnest(CAST(:queues AS text[])) AS queue")
_ANALYZE_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :ms, true)")
#: ``Driver.bound_locks``: SET LOCAL, so nothing outlives the transaction (pooler-safe).
_BOUND_LOCKS = text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)")


def _milliseconds(seconds: float) -> str:
    """A timeout setting's value: whole milliseconds, at least one (0 would mean "no timeout")."""
    return str(max(1, round(seconds * 1000)))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _crc32(text_: str) -> int:
    import zlib

    return zlib.crc32(text_.encode())


def option_groups(jobs: Sequence[NewJob]) -> dict[tuple[Any, ...], list[int]]:
    """Positions of the jobs that share every setting but their arguments (one INSERT each).

    ``defer_many`` gives one group; so does a single ``defer``. What "share"
    means is ``new_jobs.option_key``, the store's one definition.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, j in enumerate(jobs):
        groups.setdefault(option_key(j), []).append(i)
    return groups


def _group_params(tables: Tables, group: Sequence[NewJob], now: datetime) -> dict[str, Any]:
    """Everything about a group of jobs in one JSON text: one C dump instead of a dozen
    psycopg parameter dumps; times as epoch seconds, which the server turns back into
    the same microsecond."""
    first = group[0]
    given = {
        "args": [j.args for j in group],
        "handler": first.handler,
        "queue": first.queue,
        "priority": first.priority,
        "status": status_at_defer(first, now),
        "run_at": (first.run_at or now).timestamp(),
        "now": now.timestamp(),
        "max_attempts": first.max_attempts,
        "retry": first.retry.to_json() if first.retry else None,
        "timeout": first.timeout,
        "tenant": first.tenant,
        "metadata": first.metadata,
        "batch_id": first.batch_id,
        "batch_event": first.batch_event,
        # Per job, like the arguments: the flow control keys read from them (none: null).
        "keys": [[j.rate_key, j.concurrency_key, j.sequence_key, j.fair_key] for j in group]
        if any(j.rate_key or j.concurrency_key or j.sequence_key or j.fair_key for j in group)
        else None,
    }
    return {"given": json.dumps(given), "channel": tables.notify_channel}


@lru_cache(maxsize=64)
def _unnest_insert(tables: Tables) -> TextClause:
    """Insert one job per element of the ``args`` array of ``given``, wake their queue's workers, return the ids.

    The NOTIFY rides in the same statement; PostgreSQL delivers it at commit,
    so a rolled-back defer wakes no one.
    """
    jobs = tables.qualified(tables.jobs)
    return text(
        f"""
        WITH given AS (
            SELECT g->>'handler' AS handler, g->>'queue' AS queue, CAST(g->>'priority' AS int) AS priority,
                   g->>'status' AS status, to_timestamp(CAST(g->>'run_at' AS float8)) AS run_at,
                   to_timestamp(CAST(g->>'now' AS float8)) AS now, CAST(g->>'max_attempts' AS int) AS max_attempts,
                   NULLIF(g->'retry', 'null') AS retry, CAST(g->>'timeout' AS float8) AS timeout,
                   g->>'tenant' AS tenant, NULLIF(g->'metadata', 'null') AS metadata, g->'args' AS args,
                   CAST(g->>'batch_id' AS bigint) AS batch_id, g->>'batch_event' AS batch_event,
                   NULLIF(g->'keys', 'null') AS keys
            FROM (SELECT CAST(:given AS jsonb) AS g) AS call
        ), inserted AS (
            INSERT INTO {jobs} (handler, queue, priority, status, args, run_at, created_at, attempts,
                                max_attempts, retry, timeout, tenant, metadata, cancel_requested,
                                batch_id, batch_event, rate_key, concurrency_key, sequence_key, fair_key)
            SELECT o.handler, o.queue, o.priority, o.status, b.args, o.run_at, o.now, 0,
                   o.max_attempts, o.retry, o.timeout, o.tenant, o.metadata, false,
                   o.batch_id, o.batch_event, o.keys->CAST(b.ord - 1 AS int)->>0,
                   o.keys->CAST(b.ord - 1 AS int)->>1, o.keys->CAST(b.ord - 1 AS int)->>2,
                   o.keys->CAST(b.ord - 1 AS int)->>3
            FROM given AS o, jsonb_array_elements(o.args) WITH ORDINALITY AS b(args, ord)
            ORDER BY b.ord
            RETURNING id
        ), notified AS (
            SELECT pg_notify(CAST(:channel AS text), queue) FROM given
        )
        SELECT inserted.id FROM inserted CROSS JOIN notified
        """
    )


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as one JSON array: times as ISO text (which ``timestamptz`` reads back to the microsecond)."""
    return json.dumps(rows, default=lambda value: value.isoformat() if isinstance(value, datetime) else str(value))


@lru_cache(maxsize=64)
def _recordset_insert(table: Table, columns: tuple[str, ...], returning: str | None) -> TextClause:
    """INSERT every element of the JSON array ``:rows`` (objects keyed by ``columns``) into ``table``,
    in the array's order; RETURNING ``returning`` if named."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    types = ", ".join(f'"{c}" {table.c[c].type.compile(dialect=dialect)}' for c in columns)
    listed = ", ".join(f'"{c}"' for c in columns)
    given = ", ".join(f'r."{c}"' for c in columns)
    return text(
        f"""
        INSERT INTO {name} ({listed})
        SELECT {given}
        FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({types})) WITH ORDINALITY AS r({listed}, ord)
        ORDER BY r.ord
        {f'RETURNING "{returning}"' if returning else ""}
        """
    )


@lru_cache(maxsize=8)
def _workflow_insert(tables: Tables, columns: tuple[str, ...]) -> TextClause:
    """A workflow (``:workflow``, a JSON array of its one row), its steps (``:rows``, each of
    ``columns``, the workflow's id added) and its edges (``:edges``: [parent, child, rule] by step
    name), inserted together; ``:queues`` woken on ``:channel`` at commit. One row per step:
    (workflow id, job id, step name).

    Edges find their steps' ids by name (unique in a workflow) in what the steps' INSERT
    returned: data-modifying CTEs run once, in full, whatever the outer query reads.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    workflows, jobs, edges = (tables.qualified(t) for t in (tables.workflows, tables.jobs, tables.workflow_edges))
    wf_columns = ("name", "tenant", "metadata", "status", "continuations", "unfinished", "created_at")
    wf_types = ", ".join(f'"{c}" {tables.workflows.c[c].type.compile(dialect=dialect)}' for c in wf_columns)
    wf_listed = ", ".join(f'"{c}"' for c in wf_columns)
    types = ", ".join(f'"{c}" {tables.jobs.c[c].type.compile(dialect=dialect)}' for c in columns)
    listed = ", ".join(f'"{c}"' for c in columns)
    given = ", ".join(f'r."{c}"' for c in columns)
    return text(
        f"""
        WITH wf AS (
            INSERT INTO {workflows} ({wf_listed})
            SELECT * FROM jsonb_to_recordset(CAST(:workflow AS jsonb)) AS w({wf_types})
            RETURNING id
        ), steps AS (
            INSERT INTO {jobs} ({listed}, "workflow_id")
            SELECT {given}, (SELECT id FROM wf)
            FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({types})) WITH ORDINALITY AS r({listed}, ord)
            ORDER BY r.ord
            RETURNING id, step
        ), linked AS (
            INSERT INTO {edges} (workflow_id, parent_id, child_id, on_failure)
            SELECT (SELECT id FROM wf), parent.id, child.id, e.rule
            FROM jsonb_to_recordset(CAST(:edges AS jsonb)) AS e(parent text, child text, rule text)
            JOIN steps AS parent ON parent.step = e.parent
            JOIN steps AS child ON child.step = e.child
        ), notified AS (
            SELECT count(pg_notify(CAST(:channel AS text), queue)) AS n FROM unnest(CAST(:queues AS text[])) AS queue
        )
        SELECT (SELECT id FROM wf), steps.id, steps.step FROM steps CROSS JOIN notified
        """
    )


def _completion_rows(completions: Sequence[Completion]) -> str:
    """``_complete_batch``'s ``:batch``: a short JSON row per completion (``PostgreSQLDriver.complete``)."""
    return json.dumps(
        [
            [
                c.job_id,
                c.attempt,
                c.status,  # str enums: json writes their value
                c.outcome,
                c.result,
                c.error.to_json() if c.error else None,
                c.run_at.timestamp() if c.run_at else None,
                c.finished_at.timestamp(),
                c.final_at is not None,
                c.kept_owner is not None,
                c.keeps_result,
                c.logged,
            ]
            for c in completions
        ]
    )


@lru_cache(maxsize=64)
def _complete_batch(tables: Tables, plain_only: bool = False) -> TextClause:
    """The completion of a batch of one worker's attempts, one statement (``PostgreSQLDriver.complete``).

    ``plain_only``: only jobs in no batch and no workflow, which nothing is settled for: the
    statement can then commit at once (``complete_alone_then``); the others are left running.
    """
    jobs, attempts = tables.qualified(tables.jobs), tables.qualified(tables.attempts)
    plain = " AND j.batch_id IS NULL AND j.workflow_id IS NULL" if plain_only else ""
    # Every value written comes from the Completion (its flags e->8 to e->11): nothing is
    # worked out again here from the outcome or the status.
    return text(
        f"""
        WITH batch AS (
            SELECT CAST(e->>0 AS bigint) AS id, CAST(:owner AS text) AS owner, CAST(e->>1 AS int) AS attempt,
                   e->>2 AS status, e->>3 AS outcome, NULLIF(e->4, 'null') AS result,
                   NULLIF(e->5, 'null') AS error, to_timestamp(CAST(e->>6 AS float8)) AS run_at,
                   to_timestamp(CAST(e->>7 AS float8)) AS finished_at, CAST(e->>8 AS boolean) AS final,
                   CAST(e->>9 AS boolean) AS keeps_owner, CAST(e->>10 AS boolean) AS keeps_result,
                   CAST(e->>11 AS boolean) AS logged
            FROM jsonb_array_elements(CAST(:batch AS jsonb)) AS e
        ), done AS (
            UPDATE {jobs} AS j SET
                status = b.status,
                result = CASE WHEN b.keeps_result THEN b.result ELSE j.result END,
                error = COALESCE(b.error, j.error),
                run_at = COALESCE(b.run_at, j.run_at),
                finished_at = CASE WHEN b.final THEN b.finished_at END,
                lease_owner = CASE WHEN b.keeps_owner THEN j.lease_owner END,
                lease_expires_at = NULL, cancel_requested = false
            FROM batch AS b
            -- Through the primary key (id = ANY), never a scan of the running rows: their
            -- index keeps an entry per finished job until vacuum, and a bitmap scan of it
            -- cost 100 ms per batch at 150,000 jobs through the queue. "IS TRUE" keeps the
            -- status test out of any index condition, so the planner cannot pick that scan.
            WHERE j.id = ANY(ARRAY(SELECT id FROM batch)) AND j.id = b.id
              AND j.lease_owner = b.owner AND j.attempts = b.attempt AND (j.status = 'running') IS TRUE{plain}
            RETURNING j.id, j.batch_id, b.attempt, b.owner, j.started_at, b.finished_at, b.outcome, b.error, b.logged,
                      j.workflow_id, j.step
        ), logged AS (
            INSERT INTO {attempts} (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
            SELECT id, attempt, owner, started_at, finished_at, outcome, error FROM done
            WHERE logged
        ), bound AS (
            -- Driver.bound_locks, riding along: the rows just written stay locked until the
            -- caller commits (a batch may still be settled), and a caller frozen before it does
            -- must not keep them locked for longer than this.
            SELECT set_config('idle_in_transaction_session_timeout', CAST(:bound AS text), true) AS ms
        )
        SELECT COALESCE(array_agg(id), '{{}}'), COALESCE(array_agg(id) FILTER (WHERE batch_id IS NOT NULL), '{{}}'),
               COALESCE(array_agg(batch_id) FILTER (WHERE batch_id IS NOT NULL), '{{}}'),
               COALESCE(array_agg(id) FILTER (WHERE step IS NOT NULL), '{{}}'),
               COALESCE(array_agg(workflow_id) FILTER (WHERE step IS NOT NULL), '{{}}')
        FROM done WHERE (SELECT ms FROM bound) IS NOT NULL
        """
    )
