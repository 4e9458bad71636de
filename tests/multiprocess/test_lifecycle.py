"""Worker processes that are stopped: SIGTERM grace, release, and resuming from checkpoints.

Run on both backends: several processes share one SQLite file (WAL) as they share PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from jobstead import App, JobStatus
from jobstead.status import AttemptOutcome
from tests.conftest import Target
from tests.support.processes import spawn_cli, stop

pytestmark = pytest.mark.slow

WORKER = ["worker", "--app", "tests.apps.probes:app", "--lease-seconds", "1", "--poll-interval", "0.1"]


def _app(target: Target) -> App:
    from tests.apps import probes

    app = App(target.url, schema=target.schema)
    for name in ("long_task", "units"):
        h = probes.app.get_handler(name)
        app.handler(name=name, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    return app


def _wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(target: Target, tmp_path: Path) -> None:
    app = _app(target)
    job = app.get_handler("long_task").defer(seconds=0.8)
    worker = spawn_cli([*WORKER, "--shutdown-grace", "10"], target.env(), tmp_path / "w.log")
    _wait_for(lambda: bool(job.refresh().record.checkpoint))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert job.refresh().status is JobStatus.SUCCEEDED
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.SUCCEEDED]
    app.close()


def test_sigterm_after_the_grace_period_releases_the_job_without_spending_an_attempt(
    target: Target, tmp_path: Path
) -> None:
    app = _app(target)
    log = tmp_path / "units.log"
    job = app.get_handler("units").defer(count=40, log_path=str(log))
    first = spawn_cli([*WORKER, "--shutdown-grace", "0.3"], target.env(), tmp_path / "w1.log")
    _wait_for(lambda: (job.refresh().record.checkpoint or {}).get("next", 0) >= 2)
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0
    job.refresh()
    assert job.status is JobStatus.QUEUED and job.attempts == 0, "released, attempt not spent"
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.RELEASED]
    app.close()


def test_checkpoints_resume_after_sigterm_and_kill_9_with_every_unit_done_once(target: Target, tmp_path: Path) -> None:
    app = _app(target)
    log = tmp_path / "units.log"
    count = 30
    job = app.get_handler("units").defer(count=count, log_path=str(log))

    # 1. SIGTERM with a short grace: the job is released with its checkpoint.
    first = spawn_cli([*WORKER, "--shutdown-grace", "0.2"], target.env(), tmp_path / "w1.log")
    _wait_for(lambda: (job.refresh().record.checkpoint or {}).get("next", 0) >= 5)
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0

    # 2. kill -9 in the middle of the second run.
    second = spawn_cli(WORKER, target.env(), tmp_path / "w2.log")
    _wait_for(
        lambda: (job.refresh().record.checkpoint or {}).get("pid") == second.pid and job.record.checkpoint["next"] >= 12
    )
    os.kill(second.pid, signal.SIGKILL)
    second.wait(10)

    # 3. A third worker finishes from the last checkpoint.
    third = spawn_cli(WORKER, target.env(), tmp_path / "w3.log")
    try:
        result = job.wait(60)
    finally:
        assert stop(third) == 0
    assert result["units"] == count
    lines = [line.split() for line in log.read_text().splitlines()]
    counts = Counter(int(unit) for unit, _, _ in lines)
    assert sorted(counts) == list(range(count)), "every unit done"
    assert set(counts.values()) == {1}, f"some units done twice: {[u for u, n in counts.items() if n > 1]}"
    assert len({pid for _, pid, _ in lines}) == 3, "three processes took part"
    outcomes = [a.outcome for a in job.attempts_log()]
    assert outcomes == [AttemptOutcome.RELEASED, AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    app.close()


def test_a_second_ctrl_c_stops_at_once_even_during_the_grace_wait(target: Target, tmp_path: Path) -> None:
    """Regression: the second SIGINT set the grace to 0, but the wait already under way kept its 30 s."""
    app = _app(target)
    job = app.get_handler("long_task").defer(seconds=60)
    worker = spawn_cli([*WORKER, "--shutdown-grace", "30"], target.env(), tmp_path / "w.log")
    _wait_for(lambda: bool(job.refresh().record.checkpoint))
    worker.send_signal(signal.SIGINT)
    time.sleep(0.5)  # inside the grace wait now
    second_at = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert worker.wait(20) == 0
    assert time.monotonic() - second_at < 8, "the second Ctrl-C must not wait out the grace period"
    job.refresh()
    assert job.status is JobStatus.QUEUED and job.attempts == 0, "released for another worker"
    app.close()
