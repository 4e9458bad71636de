"""What differs between databases, behind one class: the driver.

Every store operation (``enqueue``, ``claims``, ``leases``, ``crons``, ...) is
written once, in SQLAlchemy Core, against the ``Driver`` interface; a driver
supplies what SQL cannot say the same way everywhere (upserts, waking
listeners, how a list of ids is matched, how an engine is set up) and may
replace a whole operation with a faster statement of its own (PostgreSQL does
for bulk inserts and completions). The generic versions here are complete and
correct on any database SQLAlchemy supports: SQLite uses them as they are, and
a new backend starts from them.

Nothing outside ``store/drivers`` asks which database it is on: it asks the
driver.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Result,
    Select,
    Table,
    Update,
    bindparam,
    insert,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import TypeEngine

from ..records import Completion, JobRecord, NewJob
from ..rows import job_record, new_job_values

if TYPE_CHECKING:
    from ..database import Database
    from .async_alone import AsyncAlone


#: The values a statement binds, or a function giving them, called once its connection is held:
#: a claim's time is read then, not before it waited for a pooled connection (it would be early).
Params = dict[str, Any] | Callable[[], dict[str, Any]]


def bound(params: Params) -> dict[str, Any]:
    """The values of ``params``, read now."""
    return params() if callable(params) else params


#: NOTIFY payload that wakes workers of every queue.
WAKE_ALL = "*"
#: NOTIFY payload prefix: "cancel:1,2,3" asks whoever runs these jobs to stop them now.
CANCEL_PREFIX = "cancel:"


#: How long a transaction of several statements may sit with its client silent (frozen,
#: stalled) before the server ends it and frees its locks (``Driver.bound_locks``). Far
#: longer than any pause between the statements of a live process; short enough that a
#: frozen one delays crash recovery by seconds, not for as long as it stays frozen.
LOCK_BOUND_SECONDS = 10.0

#: Execution option of a connection that only reads (``engine.connect().execution_options(**{READ_ONLY: True})``):
#: on SQLite it begins deferred, so it never waits for the write lock a caller's open transaction
#: holds (a defer inside the app's session reading handler rows on a connection of its own).
READ_ONLY = "jobstead_read_only"

#: Called with the queue a wake-up is about (``WAKE_ALL``: any).
Wake = Callable[[str], None]


@dataclass(slots=True)
class Applied:
    """The completions a driver wrote (their lease still held).

    ``batches``: every written job's id, with its batch id (None outside a
    batch). ``workflows``: the written jobs that are workflow steps, with their
    workflow: read by the completion's own statement, so a job outside a
    workflow costs nothing more.
    """

    batches: dict[int, int | None] = field(default_factory=dict)
    workflows: dict[int, int] = field(default_factory=dict)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.batches


class Driver:
    """The generic driver: portable SQL, one statement per row where nothing better is portable."""

    #: The SQLAlchemy backend name this driver serves (``url.get_backend_name()``).
    backend: ClassVar[str] = ""
    #: Whether ``listen`` can deliver wake-ups (LISTEN/NOTIFY); without it workers poll.
    supports_listen: ClassVar[bool] = False
    #: Whether a claim's candidates can be locked and skipped by other claimers (``SKIP LOCKED``).
    #: Without it the claiming transaction must hold the database's write lock (SQLite's
    #: ``BEGIN IMMEDIATE``) so claims are serialised instead.
    skip_locked: ClassVar[bool] = False
    #: Whether the database has a server whose clock may differ from this host's (``server_now``).
    server_clock: ClassVar[bool] = False
    #: Whether a claim can be one autocommitted statement that reads pauses and limits itself
    #: (``Claims._claim_alone``: a data-modifying CTE); without it every claim is a transaction.
    one_statement_claim: ClassVar[bool] = False
    #: Whether connections keep plans made for the tables as they were (prepared
    #: statements), so that ``refresh_planner_statistics`` is worth running.
    keeps_plans: ClassVar[bool] = False
    #: Whether a locking read (``FOR UPDATE``) reads the newest committed rows while its
    #: subqueries read the statement's snapshot (InnoDB): a row committed while the statement
    #: runs is then taken by it though its subqueries cannot see it (``Claims._ready_ids``).
    locking_reads_see_later_commits: ClassVar[bool] = False

    # -- connections ---------------------------------------------------------

    def normalize_url(self, url: URL) -> URL:
        """The URL as this driver connects with it (e.g. the DBAPI it uses)."""
        return url

    def create_engine(self, url: URL, **options: Any) -> Engine:
        raise NotImplementedError

    @contextmanager
    def alone(self, engine: Engine) -> Iterator[Connection]:
        """A connection on which every statement is a transaction of its own, committed as it completes.

        For writes that are one statement (lease renewal, checkpoint, heartbeat,
        a maintenance turn): a process frozen right after one (SIGSTOP, a VM or
        GC pause) holds no row lock, so nobody waits on it; an open transaction
        would keep the row locked for as long as the freeze lasts, and the
        rescuer, which skips locked rows, would never give its job back. The
        generic version is a transaction per block, enough for an embedded
        database that a frozen process holds nothing of once its statement ran.
        """
        with engine.begin() as conn:
            yield conn

    def rows_alone(self, engine: Engine, statement: Select[Any], params: Params) -> Sequence[Sequence[Any]]:
        """The rows of one statement run ``alone``: for a hot statement whose client cost matters.

        A function for ``params`` is called once the connection is held (``bound``)."""
        with self.alone(engine) as conn:
            return conn.execute(statement, bound(params)).all()

    def async_alone(self, engine: Engine) -> AsyncAlone | None:
        """``rows_alone`` for one event loop, awaited without a thread; None where the database has
        no async driver here (callers then run ``rows_alone`` on a thread). The caller closes it."""
        return None

    def bound_locks(self, conn: Connection, seconds: float) -> None:
        """Make the server end ``conn``'s transaction (rolling it back) if its client falls silent
        for ``seconds`` while in it: a frozen process then holds its locks that long, not forever.

        For transactions of several statements, which cannot be ``alone``.
        No-op where the database has no server of its own.
        """

    def lock_bound_row(self, seconds_param: str) -> Select[Any] | None:
        """``bound_locks`` as a row of two text columns, to ride along in a transaction's first
        SELECT (no extra round trip); the bound parameter ``seconds_param`` gives the seconds.
        None where ``bound_locks`` does nothing."""
        return None

    def unflushed_commit_row(self) -> Select[Any] | None:
        """A row of two text columns that, read inside a transaction, lets its commit return
        before the commit is on disk; None where the database cannot do that per transaction.

        Only for a claim. If the server crashes before the commit reaches disk
        the claim is undone as a whole (the job is queued again, its attempt not
        counted), which a worker crash does too: the job runs again, nothing is
        lost. Everything written later that waits for its flush (a completion, a
        defer) flushes the claim with it, as the log is written in order. A
        defer, a completion or anything a user is told of never takes it.
        """
        return None

    def describe(self, url: URL) -> str:
        """Where the database is, for messages: never the password."""
        return url.render_as_string(hide_password=True)

    def server(self, url: URL) -> str:
        """The server(s) ``url`` names, ``host[:port]``, for labels: never the user or password."""
        return (url.host or "") + (f":{url.port}" if url.port else "")

    def database_file(self, url: URL) -> str | None:
        """The file the database lives in, for an embedded database (None for a server or in-memory)."""
        return None

    #: Error texts that no retry will cure (bad credentials, a database that does not exist).
    permanent_errors: ClassVar[tuple[str, ...]] = ()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the database being unreachable for a while (down, restarting, a cut
        connection), worth retrying, rather than a mistake that retrying cannot fix."""
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

        if not isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError | TimeoutError):
            return False
        text = str(exc).lower()
        return not any(marker in text for marker in self.permanent_errors)

    def when_connections_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a connection of this process is found cut or on a server that
        stopped taking writes (a failover may be under way); returns what stops it. Only a driver
        that follows a failover calls it (``drivers/failover.py``); here it never fires."""
        return lambda: None

    # -- SQL that differs ----------------------------------------------------

    def upsert(self, table: Table) -> Any:
        """An INSERT that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        raise NotImplementedError

    def execute_update(
        self, conn: Connection, stmt: Update, params: dict[str, Any] | None = None
    ) -> Result[*tuple[Any, ...]]:
        """Run an ``UPDATE ... RETURNING`` in ``conn``'s transaction: the rows as they are after it.

        A driver whose database has no ``RETURNING`` on ``UPDATE`` (MySQL, MariaDB)
        does it otherwise, in the same transaction and with the same locks.
        """
        return conn.execute(stmt, params or {})

    def lock_rows(self, conn: Connection, stmt: Select[Any], table: Table, *, skip_locked: bool) -> Result[Any]:
        """The rows of ``stmt`` (a plain SELECT of ``table``'s rows: conditions on ``table``'s
        columns, order, limit; other tables only joined to be read), locked until ``conn``'s
        transaction ends, and no other row of ``table`` locked by finding them.

        For locks other processes must not wait on for nothing: a rescue looks through
        every running job for the expired ones, and the live ones' workers renew and
        complete them meanwhile. Here: the SELECT ``FOR UPDATE [SKIP LOCKED] OF table``.
        """
        return conn.execute(stmt.with_for_update(skip_locked=skip_locked, of=table))

    def in_bound_list(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """``column`` is one of the values of the list bound as ``name`` at execution."""
        return column.in_(bindparam(name, expanding=True))

    def bound_list_rows(self, name: str, type_: TypeEngine[Any]) -> NamedFromClause | None:
        """The list bound as ``name`` at execution as rows of one column, ``value``, to join from, and
        an ``UPDATE ... RETURNING`` may join them (``UPDATE ... FROM``); None where either is not
        offered (``Workflows._count_down_statement`` then counts per row)."""
        return None

    def id_in(self, column: ColumnElement[Any], ids: Select[Any]) -> ColumnElement[bool]:
        """``column`` is one of the ids the subquery ``ids`` selects."""
        return column.in_(ids.scalar_subquery())

    def aware_times(self, *columns: ColumnElement[datetime]) -> list[ColumnElement[datetime]]:
        """Timestamp columns as read in a hot statement: aware UTC datetimes whatever the backend keeps."""
        return list(columns)

    def lock_for_prune(self, stmt: Select[Any]) -> Select[Any]:
        """Rows a pruner is about to delete, so that two pruners never wait on each other's rows."""
        return stmt

    def minute_of(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A timestamp truncated to its minute, for per-minute charts (no portable SQL says this)."""
        raise NotImplementedError

    def refresh_planner_statistics(self, engine: Engine, qualified_table: str, *, lock_wait: float) -> bool:
        """Gather the planner's statistics of ``qualified_table`` again if the table has outgrown
        them; whether it did. No-op where the database keeps no plans across statements.
        ``lock_wait``: seconds to wait for the table's analyze lock (the database's own vacuum or
        analyze may hold it, doing the same work) before giving up.

        Why: a connection keeps its prepared statements' plans, made for the table
        as it was when it first ran them. A worker that started on an empty table
        keeps scanning the whole of it on every claim and completion as it fills
        (3 ms a claim at 8,000 finished jobs, growing), until new statistics
        invalidate those plans. The database's own analyze comes a minute or more
        late; this comes within seconds.
        """
        return False

    def estimated_rows(self, conn: Connection, qualified_table: str) -> int | None:
        """The planner's row estimate for a table, where counting would be slow; None without one."""
        return None

    def notify(self, conn: Connection, channel: str, queues: Iterable[str]) -> None:
        """Wake the workers of ``queues`` when ``conn``'s transaction commits (no-op without listeners)."""

    def server_now(self, conn: Connection) -> datetime | None:
        """The database server's clock, or None when the database has no server of its own (this host's clock)."""
        return None

    def lock_schema(self, conn: Connection, *, schema: str | None, prefix: str) -> None:
        """Serialise concurrent migrators of one installation, and create its schema if it has one."""

    # -- whole operations a driver may do faster -------------------------------

    def insert_plain(self, db: Database, conn: Connection, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        """Insert jobs without deduplication keys in ``conn``'s transaction, in input order."""
        return self.insert_each(db, conn, jobs, now)

    def insert_each(self, db: Database, conn: Connection, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        """``insert_plain`` for jobs that differ in more than their arguments (a workflow's steps,
        each with its name): a multi-row INSERT of every column, on any database."""
        table = db.tables.jobs
        values = [new_job_values(j, now) for j in jobs]
        if len(values) == 1:
            rows = [conn.execute(_insert_returning(table, ordered=False), values[0]).mappings().one()]
        else:
            # executemany + RETURNING: SQLAlchemy batches these into multi-row INSERTs
            # ("insertmanyvalues") and keeps the input order.
            rows = list(conn.execute(_insert_returning(table, ordered=True), values).mappings().all())
        records = [job_record(r, now) for r in rows]
        self.notify(conn, db.tables.notify_channel, sorted({j.queue for j in jobs}))
        return records

    def insert_workflow(
        self,
        db: Database,
        conn: Connection | None,
        workflow: dict[str, Any],
        steps: Sequence[NewJob],
        edges: Sequence[tuple[str, str, str]],
        now: datetime,
    ) -> tuple[int, dict[str, int]] | None:
        """A new workflow's row (``workflow``: its columns), its ``steps`` and ``edges`` (parent
        step, child step, rule) as one statement, in ``conn``'s transaction or autocommitted on
        its own (atomic all the same); its id and each step's job id, by name, and its queues
        woken. None where the database cannot (``Workflows.create`` then writes them one by one)."""
        return None

    def insert_many(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (all with the same keys) in ``conn``'s transaction; nothing returned."""
        if rows:
            conn.execute(insert(table), list(rows))

    def insert_alone(self, db: Database, jobs: Sequence[NewJob], now: datetime) -> list[JobRecord]:
        """Jobs sharing every option but their arguments, no keys, in a transaction of their own."""
        with db.engine.begin() as conn:
            return self.insert_plain(db, conn, jobs, now)

    def complete_alone_then(
        self, db: Database, completions: Sequence[Completion], then: Select[Any], params: Params
    ) -> tuple[set[int], Sequence[Sequence[Any]]] | None:
        """In one transaction of its own, committed: the completions of jobs in no batch and no
        workflow (nothing to settle), then ``then`` (a claim), both sent in one round trip; the
        ids written and the claim's rows. None where the database cannot (the caller then writes
        and claims as usual): only a driver that pipelines statements gains anything."""
        return None

    def complete(self, db: Database, conn: Connection, completions: Sequence[Completion]) -> Applied:
        """Apply finished attempts in ``conn``'s transaction; return the applied job ids, with their
        batch and (for workflow steps) workflow ids.

        A completion whose lease is gone (rescued, claimed again) matches no row
        and is left out.
        """
        self.bound_locks(conn, LOCK_BOUND_SECONDS)
        applied = Applied()
        for c in completions:
            row = self._complete_one(db, conn, c)
            if row is not None:
                applied.batches[c.job_id] = row.batch_id
                if row.workflow_id is not None and row.step is not None:
                    applied.workflows[c.job_id] = int(row.workflow_id)
        return applied

    def _complete_one(self, db: Database, conn: Connection, c: Completion) -> Any:
        """The row written (its batch, workflow and step), or None if the lease was gone."""
        t = db.tables
        jobs = t.jobs
        values: dict[str, Any] = {
            "status": c.status.value,
            "lease_owner": c.kept_owner,
            "lease_expires_at": None,
            "cancel_requested": False,
            "finished_at": c.final_at,
        }
        if c.keeps_result:
            values["result"] = c.result
        if c.error is not None:
            values["error"] = c.error.to_json()
        if c.run_at is not None:
            values["run_at"] = c.run_at
        held = (
            jobs.c.id == c.job_id,
            jobs.c.lease_owner == c.owner,
            jobs.c.attempts == c.attempt,
            jobs.c.status == "running",
        )
        stmt = (
            update(jobs)
            .where(*held)
            .values(values)
            .returning(jobs.c.started_at, jobs.c.batch_id, jobs.c.workflow_id, jobs.c.step)
        )
        row = self.execute_update(conn, stmt).first()
        if row is None:
            return None
        if c.logged:
            conn.execute(
                insert(t.attempts).values(
                    job_id=c.job_id,
                    attempt=c.attempt,
                    worker_id=c.owner,
                    started_at=row.started_at,
                    finished_at=c.finished_at,
                    outcome=c.outcome.value,
                    error=c.error.to_json() if c.error else None,
                )
            )
        return row

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
        """Call ``wake(queue)`` for each notification about ``queues`` (all when None), until cancelled;
        ``cancelled(job_ids)`` when running jobs were asked to stop."""
        raise NotImplementedError(f"{self.backend} has no LISTEN/NOTIFY: poll instead")


@lru_cache(maxsize=64)
def _insert_returning(table: Table, *, ordered: bool) -> Insert:
    """An INSERT of every column returning the row, built once per table: building it took about a
    third of a single defer's client CPU on SQLite and MariaDB (554 -> 368 us per defer)."""
    if ordered:
        return insert(table).returning(*table.c, sort_by_parameter_order=True)
    return insert(table).returning(*table.c)


def upsert_ignoring(driver: Driver, table: Table, values: dict[str, Any], **conflict: Any) -> Insert:
    """INSERT ``values`` unless a row conflicts on ``conflict`` (``index_elements``, ``index_where``)."""
    stmt: Insert = driver.upsert(table).values(values).on_conflict_do_nothing(**conflict)
    return stmt
