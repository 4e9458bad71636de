"""Fixtures of the fault tests: PgBouncer in front of the test server, and helpers to wait and look."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobstead import App
from tests.conftest import Target
from tests.support.faultproxy import FaultProxy
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PostgresServer
from tests.support.scratch import server_root


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PostgresServer, pg_url: str) -> Iterator[PgBouncer]:
    """One PgBouncer (transaction pooling, Debian defaults) for the session, before ``jobstead_tests``."""
    bouncer = PgBouncer(pg_server).start()
    try:
        yield bouncer
    finally:
        bouncer.cleanup()


@pytest.fixture
def bouncer_target(pgbouncer: PgBouncer) -> Target:
    """A fresh schema, reached only through PgBouncer, with the one URL option the README gives for poolers."""
    return Target("postgres", pgbouncer.url("jobstead_tests") + "?prepare_threshold=none", f"b_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def fault_proxy(pg_server: PostgresServer, pg_url: str, tmp_path: Path) -> Iterator[FaultProxy]:
    """toxiproxy in front of the session's server (``jobstead_tests``), for one test."""
    proxy = FaultProxy(pg_server.port, tmp_path / "toxiproxy.log").start()
    try:
        yield proxy
    finally:
        proxy.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def faults_app(target: Target) -> App:
    """The test's own view of ``tests.apps.faults``: same handlers and settings, no crons, the test's target."""
    from tests.apps import faults

    app = App(target.url, schema=target.schema)
    for name, h in faults.app.handlers.items():
        app.handler(name=name, concurrency=h.concurrency, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    return app


def fault_env(target: Target, spans: Path) -> dict[str, str]:
    """The environment of a process running ``tests.apps.faults``: its target and its records."""
    from tests.apps.faults import SPANS_ENV

    return {**target.env(), SPANS_ENV: str(spans)}


WORKER = ["worker", "--app", "tests.apps.faults:app", "--poll-interval", "0.1"]
SCHEDULER = ["scheduler", "--app", "tests.apps.faults:app", "--interval", "0.2"]


APP_USER = "jobstead_app"
#: Distinctive, so a grep of every output finds it wherever it leaks.
APP_PASSWORD = "Pw-7f3a9c-not-for-logs"


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of the module's own, free to stop and restart, with a password-protected role.

    The role logs in with SCRAM over TCP (a pg_hba line ahead of the trust ones),
    so wrong passwords are real authentication failures.
    """
    server = PostgresServer(root=server_root("jobstead-pg-")).start()
    try:
        done = server._psql("postgres", f"CREATE ROLE {APP_USER} LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}'")
        assert done.returncode == 0, done.stderr
        hba = server.datadir / "pg_hba.conf"
        hba.write_text(f"host all {APP_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        assert server._psql("postgres", "SELECT pg_reload_conf()").returncode == 0
        yield server
    finally:
        server.cleanup()


def password_url(server: PostgresServer, database: str, password: str = APP_PASSWORD) -> str:
    return f"postgresql+psycopg://{APP_USER}:{password}@127.0.0.1:{server.port}/{database}"


def new_database(server: PostgresServer) -> str:
    name = f"d_{uuid.uuid4().hex[:10]}"
    server.create_database(name)
    return name
