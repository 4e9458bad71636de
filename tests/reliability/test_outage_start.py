"""Processes started while PostgreSQL is down or restarting, and with a database that will never answer.

A transient outage (a restart, a failover, the database pod starting after the
workers) must be waited out: every process retries with backoff and never exits
on it. A permanent error (wrong password, missing database) must end the
process with one clear line, not a traceback (issue 13).
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from jobstead import App
from jobstead.store import JobFilter
from tests.apps.faults import read_spans
from tests.conftest import Target
from tests.reliability.conftest import (
    APP_PASSWORD,
    SCHEDULER,
    WORKER,
    fault_env,
    faults_app,
    new_database,
    password_url,
    wait_for,
)
from tests.support.postgres_server import PostgresServer, free_port
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RUN = ["run", "--app", "tests.apps.faults:app", "--poll-interval", "0.1", "--scheduler-interval", "0.2"]


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_the_metrics_process_started_while_the_database_is_down_waits_for_it(
    own_server: PostgresServer, tmp_path: Path
) -> None:
    """``jobstead metrics`` started before its database serves ``jobstead_database_up 0``, then the gauges."""
    target = Target("postgres", own_server.url(new_database(own_server)), "outage")
    app = faults_app(target)
    app.migrate()
    app.close()
    port = free_port()
    log = tmp_path / "metrics.log"
    own_server.stop()
    try:
        process = spawn_cli(["metrics", "--port", str(port)], target.env(), log)
        wait_for(lambda: log.exists() and log.read_text().strip(), 60, "the process to meet the outage")
        time.sleep(3)
        alive_while_down = process.poll() is None
        scraped_while_down = _scrape(port)
    finally:
        own_server.restart_stopped()
    try:
        assert alive_while_down, f"exited while the database was down: {log.read_text()[-3000:]}"
        assert "jobstead_database_up 0.0" in scraped_while_down, scraped_while_down[-1000:]
        wait_for(lambda: "jobstead_database_up 1.0" in _scrape(port), 60, "the gauges once the database is up")
    finally:
        stop(process)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "waiting for it" in text and "reachable again" in text, text[-3000:]
    # one line when the wait starts, one when it ends, one saying where it serves
    assert len(text.splitlines()) <= 5, text[-3000:]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(WORKER, id="worker"),
        pytest.param(SCHEDULER, id="scheduler"),
        pytest.param(RUN, id="run"),
    ],
)
def test_a_process_started_while_the_database_is_down_waits_for_it(
    own_server: PostgresServer, tmp_path: Path, args: list[str]
) -> None:
    target = Target("postgres", own_server.url(new_database(own_server)), "outage")
    spans = tmp_path / "spans.log"
    log = tmp_path / "process.log"
    own_server.stop()
    try:
        process = spawn_cli(args, fault_env(target, spans), log)
        # It says something once it meets the outage (a line saying it waits, or
        # a traceback); then it must still be there a while later.
        wait_for(lambda: log.exists() and log.read_text().strip(), 60, "the process to meet the outage")
        time.sleep(3)
        alive_while_down = process.poll() is None
    finally:
        own_server.restart_stopped()
    try:
        assert alive_while_down, f"exited while the database was down: {log.read_text()[-3000:]}"
        app = faults_app(target)
        if args is not SCHEDULER:
            job = app.get_handler("work").defer(ms=10)
            assert job.wait(60)
        if args is not WORKER:
            jobs = lambda: app.store.queries.list_jobs(JobFilter(handler="tick"))  # noqa: E731
            wait_for(jobs, 60, "a cron fire after the outage")
        app.close()
    finally:
        code = stop(process)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    # one line per state change, not one per attempt
    assert len(text.splitlines()) < 30, text[-3000:]


def test_a_worker_started_while_the_database_restarts_comes_up(own_server: PostgresServer, tmp_path: Path) -> None:
    target = Target("postgres", own_server.url(new_database(own_server)), "restart")
    spans = tmp_path / "spans.log"
    log = tmp_path / "worker.log"
    own_server.stop()
    process = spawn_cli(WORKER, fault_env(target, spans), log)
    try:
        for _ in range(3):  # up and down under it while it starts
            time.sleep(0.7)
            own_server.restart_stopped()
            time.sleep(0.3)
            own_server.stop()
        own_server.restart_stopped()
        assert process.poll() is None, log.read_text()[-3000:]
        app = faults_app(target)
        assert app.get_handler("work").defer(ms=10).wait(60)
        app.close()
    finally:
        if own_server.process is None:
            own_server.restart_stopped()
        code = stop(process)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert read_spans(spans)


PERMANENT = [
    pytest.param("password", id="wrong-password"),
    pytest.param("database", id="missing-database"),
]


@pytest.mark.parametrize("problem", [p.values[0] for p in PERMANENT], ids=[p.id for p in PERMANENT])
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(WORKER, id="worker"),
        pytest.param(SCHEDULER, id="scheduler"),
        pytest.param(RUN, id="run"),
    ],
)
def test_a_permanent_database_error_ends_the_process_with_one_clear_line(
    own_server: PostgresServer, tmp_path: Path, args: list[str], problem: str
) -> None:
    database = new_database(own_server)
    url = (
        password_url(own_server, database, "wrong-password")
        if problem == "password"
        else password_url(own_server, "no_such_database")
    )
    log = tmp_path / "process.log"
    process = spawn_cli(args, {"JOBSTEAD_DATABASE_URL": url}, log)
    try:
        code = process.wait(60)
    finally:
        stop(process)
    lines = log.read_text().strip().splitlines()
    assert code == 2, "a database that cannot be used exits 2, as the README says"
    assert len(lines) == 1, lines
    expected = "password authentication failed" if problem == "password" else 'database "no_such_database"'
    assert expected in lines[0] and "Traceback" not in lines[0], lines
    assert APP_PASSWORD not in lines[0]


def test_the_password_role_logs_in_with_the_right_password(own_server: PostgresServer) -> None:
    """The fixture itself: the failures above are authentication failures, not a broken role."""
    app = App(password_url(own_server, new_database(own_server)))
    try:
        assert app.store.queries.list_jobs(JobFilter()) == []
    finally:
        app.close()
