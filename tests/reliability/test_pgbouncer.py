"""The worker suite's core cases through a real PgBouncer in transaction mode, Debian defaults.

Jobstead has to work with the pooler a new user installs (issue 13): the URLs
carry only the one option the README gives for poolers (``prepare_threshold=none``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from jobstead import App, Context, JobStatus
from jobstead.store import JobFilter
from jobstead.store.drivers.postgresql import libpq_conninfo
from tests.conftest import Target, worker_thread
from tests.reliability.conftest import wait_for
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PostgresServer
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = pytest.mark.postgres

STARTUP_OPTIONS = (
    "every connection is refused by PgBouncer's defaults: "
    "'FATAL: unsupported startup parameter: options' (create_job_engine sends options=-c TimeZone=UTC)"
)


def _app(target: Target) -> App:
    return App(target.url, schema=target.schema)


def test_the_pooler_is_pgbouncer_in_transaction_mode_with_its_default_startup_checks(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    """The fixture itself: a plain connection passes, a session startup parameter is refused."""
    conninfo = f"host=127.0.0.1 port={pgbouncer.port} user={pgbouncer.server.user} dbname=jobstead_tests"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(conninfo + " options='-c TimeZone=UTC'")
    assert "pool_mode = transaction" in (pgbouncer.root / "pgbouncer.ini").read_text()


def test_defer_claim_and_run_sync_and_async_handlers(bouncer_target: Target) -> None:
    app = _app(bouncer_target)

    @app.handler
    def add(a: int, b: int) -> int:
        return a + b

    @app.handler
    async def greet(name: str, ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"hello": name, "attempt": ctx.attempt}

    try:
        jobs = [add.defer(a=i, b=1) for i in range(50)]
        g = greet.defer(name="ada")
        with worker_thread(app, concurrency=4):
            assert [j.wait(30) for j in jobs] == [i + 1 for i in range(50)]
            assert g.wait(30) == {"hello": "ada", "attempt": 1}
    finally:
        app.close()


def test_a_failed_attempt_is_retried(bouncer_target: Target) -> None:
    app = _app(bouncer_target)

    @app.handler(max_attempts=3, retry=0.05)
    def flaky(ctx: Context) -> int:
        if ctx.attempt < 3:
            raise ConnectionError("upstream down")
        return ctx.attempt

    try:
        job = flaky.defer()
        with worker_thread(app):
            assert job.wait(30) == 3
        assert job.refresh().attempts == 3
    finally:
        app.close()


def test_a_global_concurrency_limit_holds_across_workers(bouncer_target: Target) -> None:
    first, second = _app(bouncer_target), _app(bouncer_target)
    running: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def register(app: App) -> Any:
        @app.handler(concurrency=2)
        def limited(i: int) -> int:
            with lock:
                running.append(i)
                peak[0] = max(peak[0], len(running))
            time.sleep(0.05)
            with lock:
                running.remove(i)
            return i

        return limited

    limited = register(first)
    register(second)
    try:
        jobs = limited.defer_many([{"i": i} for i in range(30)])
        with worker_thread(first, concurrency=6), worker_thread(second, concurrency=6):
            assert [j.wait(60) for j in jobs] == list(range(30))
        assert peak[0] == 2, f"peak {peak[0]} for a handler limited to 2"
    finally:
        first.close()
        second.close()


def test_cancel_a_waiting_job_and_a_running_one(bouncer_target: Target) -> None:
    app = _app(bouncer_target)
    started = threading.Event()

    @app.handler
    def later() -> None:
        raise AssertionError("a cancelled job ran")

    @app.handler
    def busy(ctx: Context) -> str:
        started.set()
        return "stopped" if ctx.wait_cancelled(30) else "ran out"

    try:
        waiting = later.configure(delay=60).defer()
        assert waiting.cancel()
        assert waiting.refresh().status is JobStatus.CANCELLED
        job = busy.defer()
        with worker_thread(app):
            assert started.wait(30)
            job.cancel()
            wait_for(lambda: job.refresh().status is JobStatus.CANCELLED, 30, "the running job to be cancelled")
    finally:
        app.close()


@pytest.mark.slow
def test_run_fires_a_cron_and_runs_its_job(bouncer_target: Target, tmp_path: Path) -> None:
    app = _app(bouncer_target)
    process = spawn_cli(
        ["run", "--app", "tests.apps.crons:app", "--poll-interval", "0.2"], bouncer_target.env(), tmp_path / "run.log"
    )
    try:

        def fired() -> bool:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            jobs = app.store.queries.list_jobs(JobFilter(handler="beat", status=JobStatus.SUCCEEDED))
            return bool(jobs)

        wait_for(fired, 30, "a cron job to run")
    finally:
        code = stop(process)
        app.close()
    assert code == 0


def test_cli_migrate_defer_and_list(bouncer_target: Target) -> None:
    env = bouncer_target.env()
    migrated = run_cli(["migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    deferred = run_cli(["defer", "e2e_work", "--app", "tests.apps.probes:app", "--args", '{"i": 7}'], env)
    assert deferred.returncode == 0, deferred.stderr
    listed = run_cli(["jobs", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [(j["handler"], j["status"]) for j in jobs] == [("e2e_work", "queued")]


@pytest.mark.slow
def test_a_worker_process_runs_jobs_and_logs_a_broken_listener_once(bouncer_target: Target, tmp_path: Path) -> None:
    """LISTEN cannot work through transaction pooling: the worker polls, and says so once, not in a loop."""
    app = _app(bouncer_target)
    from tests.apps import probes

    h = probes.app.get_handler("e2e_work")
    work = app.handler(name="e2e_work")(h.func)
    log = tmp_path / "worker.log"
    worker = spawn_cli(
        ["worker", "--app", "tests.apps.probes:app", "--poll-interval", "0.2"], bouncer_target.env(), log
    )
    try:
        jobs = work.defer_many([{"i": i} for i in range(20)])
        for job in jobs:
            assert worker.poll() is None, log.read_text()[-3000:]
            job.wait(30)
        time.sleep(5)  # long enough for a retry loop to show
    finally:
        code = stop(worker)
        app.close()
    assert code == 0
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("LISTEN") <= 1, text[-3000:]


def test_the_operators_database_side_works_through_it(bouncer_target: Target, caplog: pytest.LogCaptureFixture) -> None:
    """What the operator does in an app's database, with its own code, through the pooler.

    The Kubernetes side (kopf, the API server) never touches the pooler; everything
    the operator writes or reads in the database does, through ``Databases``: the
    migration on first use, the scheduler and the listener it starts there, a
    JobHandler's rows, a pause, the queue depth that scales the Deployment, and
    the release of a gone pod's leases.
    """
    from jobstead_operator.databases import Databases
    from jobstead_operator.jobhandlers import _release_rows, _write_rows
    from jobstead_operator.spec import JobHandlerSpec
    from jobstead_operator.targets import parse_target

    target = parse_target(bouncer_target.url, schema=bouncer_target.schema, table_prefix=None, where="the test")
    spec = JobHandlerSpec.parse(
        {
            "handler": "e2e_work",
            "app": "tests.apps.probes:app",
            "image": "jobstead:test",
            "database": {"secretRef": {"name": "db"}},
            "concurrency": 3,
            "paused": True,
        }
    )
    user = ("JobHandler", "shop", "e2e-work")

    async def scenario() -> tuple[int | None, int, int, bool, bool]:
        databases = Databases(migrate=True, wake=lambda database, queue: None)
        database, _ = await databases.use(user, target)
        try:
            await databases.ready(database)
            for _ in range(8):  # every reconcile writes them again: past psycopg's prepare threshold
                await _write_rows(database, spec)
            store = database.store
            paused = ("handler", "e2e_work") in await database.call(store.control.paused)
            row = await database.call(store.registry.handler, "e2e_work")
            app = _app(bouncer_target)
            try:
                app.handler(name="e2e_work")(lambda i: i).defer(i=1)
            finally:
                app.close()
            for _ in range(8):  # a scaling tick reads the depth every few seconds
                load = await database.call(store.queries.handler_load, "e2e_work")
            released = await database.call(store.leases.release_host, "gone-pod-0")
            await _release_rows(database, "e2e_work")
            resumed = ("handler", "e2e_work") not in await database.call(store.control.paused)
            await asyncio.sleep(1.0)  # the scheduler and the listener have run a while
            return row.concurrency if row else None, load.due, len(released), paused, resumed
        finally:
            await databases.close_all()

    with caplog.at_level("WARNING"):
        outcome = asyncio.run(scenario())
    assert outcome == (3, 1, 0, True, True)
    problems = [r.getMessage() for r in caplog.records if "prepared statement" in r.getMessage() or r.exc_info]
    assert not problems, problems


@pytest.mark.parametrize("through", ["server", "pgbouncer"])
def test_claimed_job_times_load_as_utc_whatever_the_servers_zone(
    through: str, pg_server: PostgresServer, pgbouncer: PgBouncer
) -> None:
    """A server in local time (or in ``Etc/UTC``, Debian's default) must not cost every job a
    ``zoneinfo`` conversion: Jobstead's sessions talk UTC, also behind a transaction pooler,
    which refuses the startup option that used to say so."""
    name = f"zone_{uuid.uuid4().hex[:10]}"
    pg_server.create_database(name)
    with psycopg.connect(libpq_conninfo(make_url(pg_server.url())), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Europe/Paris'")
    url = pg_server.url(name) if through == "server" else pgbouncer.url(name) + "?prepare_threshold=none"
    app = App(url)
    try:

        @app.handler
        def noop() -> None:
            return None

        deferred = [noop.defer() for _ in range(3)]
        store = app.store
        for expected in deferred:  # one claim per transaction: a pooler may lend another server connection each time
            (job,) = store.claims.claim(worker_id="w", handlers=["noop"], queues=None, limit=1, lease_seconds=30)
            assert job.id == expected.id
            assert job.run_at.tzinfo is UTC and job.created_at.tzinfo is UTC
            assert abs((datetime.now(UTC) - job.created_at).total_seconds()) < 60
    finally:
        app.close()
