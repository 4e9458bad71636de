"""Workers whose connections to PostgreSQL are cut, and then held still for longer than the lease.

The workers talk to the database through toxiproxy; the test itself looks
straight at the server. Every job must end, none may run twice at once (from
the handlers' own start/end records), and no worker may exit by itself
(issue 13).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobstead import JobStatus
from tests.apps.faults import overlapping, read_spans
from tests.conftest import Target
from tests.reliability.conftest import WORKER, fault_env, faults_app, wait_for
from tests.support.faultproxy import FaultProxy
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 2.0


def _through(proxy: FaultProxy, target: Target) -> Target:
    return Target("postgres", proxy.url("postgres", "jobstead_tests"), target.schema)


def test_workers_reconnect_after_a_cut_and_a_stall_longer_than_the_lease(
    postgres_target: Target, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    spans = tmp_path / "spans.log"
    env = fault_env(_through(fault_proxy, postgres_target), spans)
    app = faults_app(postgres_target)  # the test's own view: straight to the server
    jobs = app.get_handler("work").defer_many([{"ms": 40} for _ in range(150)])
    jobs += app.get_handler("work_async").defer_many([{"ms": 40} for _ in range(150)])
    workers = [
        spawn_cli([*WORKER, "--lease-seconds", str(LEASE), "--concurrency", "4"], env, tmp_path / f"w{n}.log")
        for n in range(2)
    ]
    logs = [tmp_path / f"w{n}.log" for n in range(2)]
    try:
        wait_for(lambda: len(read_spans(spans)) >= 60, 60, "the first jobs")
        fault_proxy.cut(down_for=1.0)
        wait_for(lambda: len(read_spans(spans)) >= 150, 60, "work after the cut")
        fault_proxy.stall(3 * LEASE)
        last_fault = time.time()
        for job in jobs:
            job.wait(120)
        drained_after = time.time() - last_fault
        alive = [w.poll() is None for w in workers]
    finally:
        codes = [stop(w) for w in workers]
    runs = read_spans(spans)
    statuses = {j.refresh().status for j in jobs}
    app.close()
    assert alive == [True, True], [log.read_text()[-2000:] for log in logs]
    assert codes == [0, 0]
    assert statuses == {JobStatus.SUCCEEDED}
    assert not overlapping(runs, until=time.time()), "a job ran twice at once"
    assert drained_after < 60, f"{drained_after:.0f} s to drain after the stall"


def test_workers_resume_after_a_partition_that_drops_every_packet(
    postgres_target: Target, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """No byte gets through, nothing is closed: only the worker's own timeouts can notice."""
    spans = tmp_path / "spans.log"
    env = fault_env(_through(fault_proxy, postgres_target), spans)
    app = faults_app(postgres_target)
    log = tmp_path / "w.log"
    worker = spawn_cli([*WORKER, "--lease-seconds", str(LEASE)], env, log)
    try:
        first = app.get_handler("work").defer(ms=10)
        first.wait(60)
        with fault_proxy.blackholed():
            time.sleep(3 * LEASE)
        after = app.get_handler("work").defer(ms=10)
        after.wait(90)
        alive = worker.poll() is None
    finally:
        code = stop(worker)
        app.close()
    assert alive, log.read_text()[-3000:]
    assert code == 0
