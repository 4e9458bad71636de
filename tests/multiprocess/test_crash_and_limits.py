"""Several worker processes on one PostgreSQL or MariaDB: the global limit holds, kill -9 loses nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from jobstead import App, JobStatus
from jobstead.status import AttemptOutcome
from tests.conftest import Target
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.slow]


def _peak(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end before a start at the same instant)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _probe_app(target: Target) -> App:
    from tests.apps import probes

    app = App(target.url, schema=target.schema)
    for name in ("limited", "long_task"):
        h = probes.app.get_handler(name)
        app.handler(name=name, concurrency=h.concurrency, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    return app


def test_global_concurrency_limit_across_processes(server_target: Target, tmp_path: Path) -> None:
    app = _probe_app(server_target)
    jobs = app.get_handler("limited").defer_many([{"i": i} for i in range(200)])
    workers = [
        spawn_cli(
            [
                "worker",
                "--app",
                "tests.apps.probes:app",
                "--concurrency",
                "8",
                "--handler",
                "limited",
                "--poll-interval",
                "0.05",
            ],
            server_target.env(),
            tmp_path / f"worker-{n}.log",
        )
        for n in range(4)
    ]
    try:
        results = [app.get_job(j.id).wait(120) for j in jobs]
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0]
    assert all(app.get_job(j.id).status is JobStatus.SUCCEEDED for j in jobs)
    peak = _peak([(r["start"], r["end"]) for r in results])
    assert peak <= 3, f"{peak} jobs of a handler limited to 3 ran at once"
    assert peak == 3, "the limit should also be reached, not just respected"
    assert len({r["pid"] for r in results}) > 1, "every process should have taken part"
    app.close()


def test_kill_9_mid_job_is_rescued_after_the_lease_and_runs_once_at_a_time(
    server_target: Target, tmp_path: Path
) -> None:
    app = _probe_app(server_target)
    job = app.get_handler("long_task").defer(seconds=1.5)
    args = [
        "worker",
        "--app",
        "tests.apps.probes:app",
        "--lease-seconds",
        "1",
        "--poll-interval",
        "0.1",
    ]
    victim = spawn_cli(args, server_target.env(), tmp_path / "victim.log")
    survivor = None
    try:
        deadline = time.time() + 30
        while not (job.refresh().record.checkpoint or {}).get("pid"):
            assert time.time() < deadline, "the job never started"
            time.sleep(0.02)
        assert job.record.checkpoint["pid"] == victim.pid
        survivor = spawn_cli(args, server_target.env(), tmp_path / "survivor.log")
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        result = job.wait(60)
    finally:
        if survivor is not None:
            assert stop(survivor) == 0
        if victim.poll() is None:
            victim.kill()
    assert result["pid"] == survivor.pid
    assert result["start"] >= killed_at, "the job ran in two workers at once"
    job.refresh()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    log = job.attempts_log()
    assert [a.outcome for a in log] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert log[0].error is not None and log[0].error.type == "jobstead.LeaseExpired"
    lost_worker = log[0].worker_id
    assert lost_worker is not None and str(victim.pid) in lost_worker
    # rescued in seconds, not hours: the lease (1 s) plus a heartbeat or two
    assert log[1].started_at is not None and (log[1].started_at.timestamp() - killed_at) < 5
    app.close()
