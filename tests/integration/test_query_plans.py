"""The hot statements keep the plans the benchmark found they need (PostgreSQL).

Both pathologies below were invisible in every functional test and cost the
benchmark 5-10x: they are checked here on the plan itself, not on a timing.

* The claim must walk the ready index to its LIMIT, never scan the table and
  sort every ready row.
* A completion batch must find its jobs through the primary key, never scan
  the index of running rows: that index keeps an entry for every finished job
  until vacuum, and a bitmap scan never marks those dead.
* A connection's cached plan must not outlive the table it was made for: a
  worker that started on an empty table kept scanning the whole table on every
  claim as it filled (3 ms a claim at 8,000 finished jobs; the steady-state
  benchmark's backlog grew without bound at 85% of capacity) until the
  planner statistics service gathered new statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import event, make_url

from jobstead import App, JobStatus
from jobstead.services import PlannerStatistics
from jobstead.status import AttemptOutcome
from jobstead.store import Completion, JobFilter, Store
from jobstead.store.statistics import BULK_WRITE
from tests.conftest import Target

pytestmark = pytest.mark.postgres


def _app_with_handler(target: Target) -> App:
    """An app on its own schema, migrated, with one published handler ``h(n)``."""
    app = App(target.url, schema=target.schema)

    @app.handler
    def h(n: int) -> None: ...

    app.migrate()
    app.store.registry.publish_handlers([h.definition()])
    return app


@pytest.fixture
def busy_app(postgres_target: Target) -> Iterator[App]:
    """5,000 jobs through the queue: some finished (dead index entries left), some running, most ready."""
    app = _app_with_handler(postgres_target)
    h = app.get_handler("h")
    h.defer_many([{"n": i} for i in range(5000)])
    store = app.store
    for _ in range(3):
        jobs = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=500, lease_seconds=60)
        now = store.clock()
        store.leases.complete(
            [Completion(j.id, "w", j.attempts, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, now) for j in jobs]
        )
    store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1000, lease_seconds=60)
    with store.db.engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {store.tables.qualified(store.tables.jobs)}")
    yield app
    app.close()


def _plan_of(app: App, run: Any, starts: str, url: str) -> str:
    """EXPLAIN the statement starting with ``starts`` that ``run()`` sends, with its parameters."""
    sent: list[tuple[str, Any]] = []  # parameters: a mapping (SQLAlchemy's), or positional ($n: rows_alone's)

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    driver = app.store.db.driver
    rows_alone = driver.rows_alone

    def capture_alone(engine: Any, statement: Any, params: Any) -> Any:
        raw = driver.rendered(engine, statement)  # type: ignore[attr-defined]  # PostgreSQL's
        values = params() if callable(params) else params  # a claim's: read when its connection is held
        sent.append((raw.sql, raw.values(values)))
        return rows_alone(engine, statement, values)

    event.listen(app.store.db.engine, "before_cursor_execute", capture)
    driver.rows_alone = capture_alone  # type: ignore[method-assign]
    try:
        run()
    finally:
        event.remove(app.store.db.engine, "before_cursor_execute", capture)
        del driver.rows_alone
    statement, parameters = next((s, p) for s, p in sent if s.lstrip().startswith(starts))
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        cursor = psycopg.RawCursor(conn) if isinstance(parameters, list) else conn.cursor()
        plan = "\n".join(row[0] for row in cursor.execute("EXPLAIN " + statement, parameters))
        conn.rollback()
    return plan


@pytest.mark.parametrize(
    ("handlers", "starts"),
    [
        # This claimer claimed before with nothing in its way: one statement, the pause read inside.
        (["h"], "WITH blocked"),
        # A claimer's first claim: the transaction (pause read, then the UPDATE).
        (["h", "another"], "UPDATE"),
    ],
    ids=["one-statement", "transaction"],
)
def test_the_claim_walks_the_ready_index_to_its_limit(
    busy_app: App, postgres_target: Target, handlers: list[str], starts: str
) -> None:
    store = busy_app.store
    plan = _plan_of(
        busy_app,
        lambda: store.claims.claim(worker_id="w2", handlers=handlers, queues=None, limit=500, lease_seconds=60),
        starts,
        postgres_target.url,
    )
    assert "jobs_ready_any_queue" in plan, plan
    assert "Seq Scan on jobstead_jobs" not in plan and "Sort" not in plan, plan


def test_a_completion_batch_goes_through_the_primary_key(busy_app: App, postgres_target: Target) -> None:
    store = busy_app.store
    running = store.queries.list_jobs(JobFilter(status=JobStatus.RUNNING, limit=500))
    assert len(running) == 500
    now = store.clock()
    batch = [Completion(j.id, "w", j.attempts, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, now) for j in running]
    plan = _plan_of(busy_app, lambda: store.leases.complete(batch), "WITH batch", postgres_target.url)
    assert "jobstead_jobs_pkey" in plan, plan
    assert "jobs_active" not in plan and "Bitmap" not in plan, plan


class PreparedClaim:
    """A worker's connection as the worker leaves it: the one-statement claim prepared on it.

    ``plan_cache_mode = force_generic_plan``: the plan is made once and kept, as the
    server does for a statement whose generic plan costs no more than its custom ones.
    """

    def __init__(self, app: App, url: str) -> None:
        store = app.store
        driver = store.db.driver
        raw = driver.rendered(store.db.engine, store.claims._alone((False, False)))  # type: ignore[attr-defined]
        self.sql = raw.sql
        now = store.clock()
        params = {"owner": "w", "expires": now, "started": now, "now": now, "limit": 10, "handlers": ["h"]}
        self.params = raw.values(params)
        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self.conn.execute("SET plan_cache_mode = force_generic_plan")

    def prepare(self) -> None:
        for _ in range(6):  # psycopg prepares a statement on its 5th execution
            psycopg.RawCursor(self.conn).execute(self.sql, self.params, prepare=True)

    def cached_plan(self) -> str:
        name, n = self.conn.execute(
            "SELECT name, cardinality(parameter_types) FROM pg_prepared_statements WHERE statement LIKE %s",
            ("WITH blocked%",),
        ).fetchone() or ("", 0)
        explain = sql.SQL("EXPLAIN EXECUTE {}({})").format(sql.Identifier(name), sql.SQL(", ").join([sql.NULL] * n))
        return "\n".join(row[0] for row in self.conn.execute(explain))

    def close(self) -> None:
        self.conn.close()


def test_the_claims_generic_plan_uses_the_ready_index(busy_app: App, postgres_target: Target) -> None:
    """The statuses are in the statement's text: with them as parameters the ready index (whose
    predicate names them) was out of a generic plan's reach, and the server planned every claim."""
    claim = PreparedClaim(busy_app, postgres_target.url)
    try:
        claim.prepare()
        plan = claim.cached_plan()
    finally:
        claim.close()
    assert "jobs_ready_any_queue" in plan, plan
    assert "Seq Scan on jobstead_jobs" not in plan, plan


def _never_analyzed_by_the_server(store: Store, table: str) -> None:
    """Autovacuum off for ``table``: any statistics it gets are Jobstead's."""
    with store.db.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def _fan(app: App, width: int) -> Any:
    """An unsent workflow of ``h`` steps: a root, ``width`` leaves after it, a sink after them all
    (twice ``width`` edges)."""
    h = app.get_handler("h")
    wf = app.workflow("fan")
    wf.add("root", h.job(n=0))
    for i in range(width):
        wf.add(f"leaf-{i}", h.job(n=i), after=["root"])
    wf.add("sink", h.job(n=0), after=[f"leaf-{i}" for i in range(width)])
    return wf


def _recorded_rows(store: Store, table: str) -> float:
    with store.db.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass")
        return float(rows.scalar_one())


@contextmanager
def _claim_prepared_on_an_empty_table(target: Target) -> Iterator[tuple[App, str, PreparedClaim]]:
    """An app, its jobs table (autovacuum off: any statistics are Jobstead's), and a worker's claim
    prepared while that table is empty."""
    app = _app_with_handler(target)
    jobs_table = app.store.tables.qualified(app.store.tables.jobs)
    claim = PreparedClaim(app, target.url)
    try:
        _never_analyzed_by_the_server(app.store, jobs_table)
        claim.prepare()
        yield app, jobs_table, claim
    finally:
        claim.close()


def test_a_plan_made_on_an_empty_table_is_made_again_once_the_table_has_grown(postgres_target: Target) -> None:
    """Jobs deferred in the caller's own transaction: the workers' service gathers the statistics."""
    with _claim_prepared_on_an_empty_table(postgres_target) as (app, jobs_table, claim):
        store = app.store
        with store.db.engine.begin() as conn:
            app.get_handler("h").configure(session=conn).defer_many([{"n": i} for i in range(5000)])
        claim.conn.execute(f"UPDATE {jobs_table} SET status = 'succeeded', finished_at = now()")
        assert "Seq Scan on jobstead_jobs" in claim.cached_plan()  # the pathology: made for an empty table

        PlannerStatistics(store, "w").run_once()

        plan = claim.cached_plan()
        assert "Seq Scan on jobstead_jobs" not in plan, plan
        assert "jobs_ready_any_queue" in plan and "jobstead_jobs_pkey" in plan, plan
    assert store.refresh_planner_statistics() is False  # no growth since: no second ANALYZE
    app.close()


def test_a_bulk_defer_gathers_the_statistics_the_table_outgrew_before_it_returns(postgres_target: Target) -> None:
    """The first drain of a fresh installation was the slow one: its workers claimed with plans made
    for an empty table until the service came round (20,000 jobs under a global limit of 100
    drained at 9,300 jobs/s, the drains after it at 13,300-15,000)."""
    with _claim_prepared_on_an_empty_table(postgres_target) as (app, jobs_table, claim):
        h = app.get_handler("h")
        h.defer_many([{"n": i} for i in range(5000)])  # a transaction of Jobstead's own
        assert _recorded_rows(app.store, jobs_table) == 5000
        plan = claim.cached_plan()
        assert "jobs_ready_any_queue" in plan and "Seq Scan on jobstead_jobs" not in plan, plan

        h.defer_many([{"n": i} for i in range(BULK_WRITE - 1)])  # fewer: not even the catalog read
        h.defer_many([{"n": i} for i in range(2000)])  # many, but the table has not doubled
        assert _recorded_rows(app.store, jobs_table) == 5000
    app.close()


def test_a_bulk_defer_gives_up_the_statistics_at_once_when_a_vacuum_holds_the_table(postgres_target: Target) -> None:
    """Autovacuum may hold the table's analyze lock for minutes: the defer's caller (a request) waits
    50 ms for it at most, not the service's second, then returns with its jobs written."""
    app = _app_with_handler(postgres_target)
    h = app.get_handler("h")
    store = app.store
    jobs_table = store.tables.qualified(store.tables.jobs)
    _never_analyzed_by_the_server(store, jobs_table)
    waits: list[Any] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "lock_timeout" in statement:
            waits.append(parameters)

    holder = psycopg.connect(postgres_target.url.replace("postgresql+psycopg://", "postgresql://"))
    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        holder.execute(f"LOCK TABLE {jobs_table} IN SHARE UPDATE EXCLUSIVE MODE")  # what a VACUUM takes
        records = h.defer_many([{"n": i} for i in range(5000)])
        assert len(records) == 5000
        assert waits == [{"ms": "50"}]  # one try, on the jobs table; the edges are too small to need one
        assert _recorded_rows(store, jobs_table) < 0  # gave up: left to the service
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
        holder.rollback()
        holder.close()
    assert store.refresh_planner_statistics() is True  # the service's turn, the lock gone
    app.close()


def test_a_batch_deferred_alone_gathers_the_statistics_too(postgres_target: Target) -> None:
    app = _app_with_handler(postgres_target)
    h = app.get_handler("h")
    store = app.store
    jobs_table = store.tables.qualified(store.tables.jobs)
    _never_analyzed_by_the_server(store, jobs_table)
    app.defer_batch([h.job(n=i) for i in range(5000)])
    assert _recorded_rows(store, jobs_table) == 5000
    app.close()


def test_a_workflow_deferred_alone_gathers_its_edges_statistics(postgres_target: Target) -> None:
    app = _app_with_handler(postgres_target)
    store = app.store
    edges_table = store.tables.qualified(store.tables.workflow_edges)
    _never_analyzed_by_the_server(store, edges_table)
    _fan(app, 1500).defer()
    assert _recorded_rows(store, edges_table) == 3000
    app.close()


def test_a_role_that_does_not_own_the_table_leaves_its_statistics_to_autovacuum(
    postgres_target: Target,
) -> None:
    """ANALYZE by a role that does not own the table is a warning and does nothing: never tried."""
    app = _app_with_handler(postgres_target)
    with app.store.db.engine.begin() as conn:  # the caller's transaction: no ANALYZE after it
        app.get_handler("h").configure(session=conn).defer_many([{"n": i} for i in range(5000)])
    jobs_table = app.store.tables.qualified(app.store.tables.jobs)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with app.store.db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{postgres_target.schema}" TO {role}')
    other = Store.connect(make_url(postgres_target.url).set(username=role), schema=postgres_target.schema)
    try:
        assert other.refresh_planner_statistics() is False
        assert _recorded_rows(app.store, jobs_table) == -1  # never analyzed
        assert app.store.refresh_planner_statistics() is True  # the owner does
    finally:
        other.close()
        with app.store.db.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        app.close()


def test_the_workflow_edges_outgrowing_their_statistics_are_analyzed_too(postgres_target: Target) -> None:
    """A workflow of thousands of steps adds twice as many edges at once; planned on the statistics
    of a near-empty edges table, a fan-in's count-down hashed a scan of every edge at each completion."""
    app = _app_with_handler(postgres_target)
    store = app.store
    edges_table = store.tables.qualified(store.tables.workflow_edges)
    _never_analyzed_by_the_server(store, edges_table)
    with store.db.engine.begin() as conn:  # the caller's transaction: the service's to do
        _fan(app, 3000).defer(session=conn)

    assert _recorded_rows(store, edges_table) < 0  # never analyzed
    assert store.refresh_planner_statistics() is True
    assert _recorded_rows(store, edges_table) == 6000
    app.close()
