"""20 worker processes against a PostgreSQL that takes 50 connections.

Each worker holds a pool plus a listener and a heartbeat; together they want
more than the server gives. A worker that cannot get a connection must say so
in a clear line and retry, never crash or lose a job (issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from jobstead import JobStatus
from jobstead.store.drivers.postgresql import libpq_conninfo
from tests.conftest import Target
from tests.reliability.conftest import WORKER, fault_env, faults_app
from tests.support.postgres_server import PostgresServer
from tests.support.processes import spawn_cli, stop
from tests.support.scratch import server_root

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKERS = 20


@pytest.fixture(scope="module")
def small_server() -> Iterator[PostgresServer]:
    server = PostgresServer(settings=["max_connections=50"], root=server_root("jobstead-pg-")).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_twenty_workers_on_fifty_connections_lose_nothing_and_wait_for_a_connection(
    small_server: PostgresServer, tmp_path: Path
) -> None:
    target = Target("postgres", small_server.create_database("limits"), "limits")
    spans = tmp_path / "spans.log"
    app = faults_app(target)
    jobs = app.get_handler("work").defer_many([{"ms": 20} for _ in range(400)])
    app.close()
    # The test's one connection, taken before the workers take the rest: idle workers keep
    # theirs (their pools), so a connection asked for later may never come.
    watch = psycopg.connect(libpq_conninfo(make_url(target.url)), autocommit=True)
    logs = [tmp_path / f"w{n}.log" for n in range(WORKERS)]
    workers = [spawn_cli([*WORKER, "--concurrency", "4"], fault_env(target, spans), log) for log in logs]
    try:
        deadline = time.monotonic() + 240
        statuses: set[str] = set()
        refused_yet = False
        # Until every job is done AND some worker met the limit: on a busy machine the first
        # workers up can drain the jobs before the last ones ask for their connections.
        while time.monotonic() < deadline and (statuses != {JobStatus.SUCCEEDED.value} or not refused_yet):
            time.sleep(1)
            refused_yet = refused_yet or any("too many clients" in log.read_text() for log in logs if log.exists())
            rows = watch.execute(
                f'SELECT DISTINCT status FROM "{target.schema}".jobstead_jobs WHERE id = ANY(%s)',
                [[j.id for j in jobs]],
            )
            statuses = {status for (status,) in rows}
        alive = [w.poll() is None for w in workers]
    finally:
        codes = [stop(w) for w in workers]
        watch.close()
    texts = [log.read_text() for log in logs]
    assert statuses == {JobStatus.SUCCEEDED.value}
    assert all(alive), [t[-1500:] for t, a in zip(texts, alive, strict=True) if not a][:2]
    assert codes == [0] * WORKERS
    refused = [t for t in texts if "too many clients" in t]
    assert refused, "the limit was never reached: the test shows nothing"
    assert not any("Traceback" in t for t in refused), refused[0][-3000:]


def test_a_pool_waits_for_its_own_connection_when_the_server_has_no_more(
    small_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server full, a second caller of a pool holding one connection waits for it, and the
    worker option ``pool_size`` bounds the pool."""
    import threading

    from jobstead import App

    url = small_server.create_database(f"p{time.monotonic_ns()}")
    app = App(url)
    app.handler(name="h")(lambda: None)
    worker = app.worker(pool_size=2, install_signal_handlers=False)
    store = worker._env.open_store()
    assert store.db.engine.pool.size() == 2  # type: ignore[attr-defined]
    engine = store.db.engine
    first = engine.connect()
    first.exec_driver_sql("SELECT 1")
    hogs = []
    try:
        while True:  # every slot the server has left, taken by someone else
            try:
                hogs.append(psycopg.connect(libpq_conninfo(make_url(url)), autocommit=True))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc)
                break
        got: list[float] = []
        started = time.monotonic()

        def second_caller() -> None:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                got.append(time.monotonic() - started)

        with caplog.at_level("WARNING", logger="jobstead.store"):
            caller = threading.Thread(target=second_caller)
            caller.start()
            time.sleep(0.5)
            assert not got, "it got a connection the server does not have"
            first.close()  # back to the pool: the waiting caller gets it
            caller.join(10)
        assert got and got[0] >= 0.5
        assert "waiting for one of this process's" in caplog.text and "too many clients" in caplog.text
    finally:
        for hog in hogs:
            hog.close()
        app.close()
