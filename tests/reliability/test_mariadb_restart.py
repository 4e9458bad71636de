"""MariaDB restarted under a running worker: it waits the outage out, nothing is lost, no traceback.

The server goes away mid-run ("server has gone away", lost connections,
refused connections while it is down): the worker's loops retry with backoff
and log the outage in a line or two; every job deferred before and during the
restart succeeds, none twice at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobstead import JobStatus
from tests.apps.faults import read_spans
from tests.conftest import Target
from tests.reliability.conftest import WORKER, fault_env, faults_app, wait_for
from tests.support.mariadb_server import MariaDBServer
from tests.support.processes import spawn_cli, stop
from tests.support.scratch import server_root

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]


@pytest.fixture
def own_mariadb() -> Iterator[MariaDBServer]:
    server = MariaDBServer(root=server_root("jobstead-mariadb-")).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_a_worker_rides_out_a_server_restart(own_mariadb: MariaDBServer, tmp_path: Path) -> None:
    target = Target("mariadb", own_mariadb.create_database("restart"), "restart")
    spans, log = tmp_path / "spans.log", tmp_path / "worker.log"
    app = faults_app(target)
    app.migrate()
    work = app.get_handler("work")
    before = work.defer_many([{"ms": 20} for _ in range(100)])
    worker = spawn_cli([*WORKER, "--concurrency", "8", "--lease-seconds", "5"], fault_env(target, spans), log)
    try:
        wait_for(lambda: len(read_spans(spans)) >= 10, 60, "the worker to start jobs")
        own_mariadb.restart()
        time.sleep(1)
        after = work.defer_many([{"ms": 20} for _ in range(50)])
        for job in [*before, *after]:
            job.wait(120)
        assert all(app.get_job(j.id).status is JobStatus.SUCCEEDED for j in [*before, *after])
    finally:
        code = stop(worker)
        app.close()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "works again" in text, "the worker should have met the outage and said when it ended"
    assert len([s for s in read_spans(spans) if s.handler == "work"]) >= 150
