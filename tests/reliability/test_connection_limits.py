"""20 worker processes against a PostgreSQL that takes 50 connections.

Each worker holds a pool plus a listener and a heartbeat; together they want
more than the server gives. A worker that cannot get a connection must say so
in a clear line and retry, never crash or lose a job (issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobstead import JobStatus
from tests.conftest import Target
from tests.reliability.conftest import WORKER, fault_env, faults_app
from tests.support.postgres_server import PostgresServer
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKERS = 20


@pytest.fixture(scope="module")
def small_server() -> Iterator[PostgresServer]:
    server = PostgresServer(settings=["max_connections=50"]).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.xfail(
    strict=True,
    reason="with 20 workers on max_connections=50, jobs are still queued/running after 240 s although every "
    "handler ran once: claims, heartbeats and completion writes fail with 'FATAL: sorry, too many clients "
    "already' (each logged as a full traceback, ~300 across the logs) and no worker waits for a connection",
)
def test_twenty_workers_on_fifty_connections_lose_nothing_and_wait_for_a_connection(
    small_server: PostgresServer, tmp_path: Path
) -> None:
    target = Target("postgres", small_server.create_database("limits"), "limits")
    spans = tmp_path / "spans.log"
    app = faults_app(target)
    jobs = app.get_handler("work").defer_many([{"ms": 20} for _ in range(400)])
    app.close()  # the test holds no connection while the workers compete
    logs = [tmp_path / f"w{n}.log" for n in range(WORKERS)]
    workers = [spawn_cli([*WORKER, "--concurrency", "4"], fault_env(target, spans), log) for log in logs]
    try:
        deadline = time.monotonic() + 240
        statuses: set[JobStatus] = set()
        while time.monotonic() < deadline and statuses != {JobStatus.SUCCEEDED}:
            time.sleep(1)
            try:  # the test competes for connections too
                statuses = _statuses(target, [j.id for j in jobs])
            except Exception:
                continue
        alive = [w.poll() is None for w in workers]
    finally:
        codes = [stop(w) for w in workers]
    texts = [log.read_text() for log in logs]
    assert statuses == {JobStatus.SUCCEEDED}
    assert all(alive), [t[-1500:] for t, a in zip(texts, alive, strict=True) if not a][:2]
    assert codes == [0] * WORKERS
    refused = [t for t in texts if "too many clients" in t]
    assert refused, "the limit was never reached: the test shows nothing"
    assert not any("Traceback" in t for t in refused), refused[0][-3000:]


def _statuses(target: Target, ids: list[int]) -> set[JobStatus]:
    app = faults_app(target)
    try:
        return {app.get_job(i).status for i in ids}
    finally:
        app.close()
