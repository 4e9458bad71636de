"""Fixtures shared by every test: databases on both backends, apps, workers in threads."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobstead import App, Worker
from tests.support.mariadb_server import MariaDBServer
from tests.support.postgres_server import PostgresServer
from tests.support.scratch import server_root

#: The session's Kubernetes cluster, one for the e2e and the dashboard tests alike; bytecode its children share.
pytest_plugins = ["tests.support.kube_fixtures", "tests.support.bytecode"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(root=server_root("jobstead-pg-")).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database("jobstead_tests")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    server = MariaDBServer(root=server_root("jobstead-mariadb-")).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mariadb_url(mariadb_server: MariaDBServer) -> str:
    return mariadb_server.create_database("jobstead_tests")


@dataclass(frozen=True)
class Target:
    """Where one test's jobs live: a URL plus (on PostgreSQL and MariaDB) a schema of its own
    (on MariaDB a schema is a database, created by the first migration like a PostgreSQL schema)."""

    backend: str
    url: str
    schema: str | None

    def env(self) -> dict[str, str]:
        """The same target for a subprocess (a worker started through the CLI)."""
        env = {"JOBSTEAD_DATABASE_URL": self.url}
        if self.schema:
            env["JOBSTEAD_SCHEMA"] = self.schema
        return env


@pytest.fixture
def postgres_target(request: pytest.FixtureRequest) -> Target:
    url = request.getfixturevalue("pg_url")
    return Target("postgres", url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def mariadb_target(request: pytest.FixtureRequest) -> Target:
    url = request.getfixturevalue("mariadb_url")
    return Target("mariadb", url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Target:
    return Target("sqlite", f"sqlite:///{tmp_path / 'jobs.db'}", None)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def server_target(request: pytest.FixtureRequest) -> Target:
    """A database with a server of its own (several processes, real row locks): PostgreSQL and MariaDB."""
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


@pytest.fixture
def make_app(target: Target) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**options: Any) -> App:
        app = App(target.url, schema=target.schema, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


FAST = {
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.2,
    "poll_interval": 0.1,
    "install_signal_handlers": False,
}


@contextlib.contextmanager
def worker_thread(app: App, **options: Any) -> Iterator[Worker]:
    """A real worker on a thread of this process, stopped (gracefully) on exit."""
    worker = app.worker(**{**FAST, **options})
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker", daemon=True)
    thread.start()
    if not worker.started.wait(30):
        raise RuntimeError(f"worker did not start: {errors}")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        if errors:
            raise errors[0]
        assert not thread.is_alive(), "worker did not stop"


@pytest.fixture
def running_worker() -> Callable[..., contextlib.AbstractContextManager[Worker]]:
    return worker_thread
