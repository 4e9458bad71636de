"""One worker and one scheduler whose clocks are 60 s off, beside processes on the real clock.

Leases, ``run_at``, rescue and cron fire times are decisions about time shared
by every host, so they must not depend on any one host's clock (issue 13). The
skewed processes run under libfaketime; the test checks that their clock
really is off (a probe child, and the timestamps of their own log lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobstead import JobStatus
from jobstead.status import AttemptOutcome
from tests.apps.faults import read_cron_fires, read_spans
from tests.conftest import Target
from tests.reliability.conftest import SCHEDULER, WORKER, fault_env, faults_app, wait_for
from tests.support.faketime import first_log_time, measured_skew, skewed_env
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SKEW = 60
LEASE = ["--lease-seconds", "2"]


@pytest.mark.parametrize("offset", [SKEW, -SKEW])
def test_libfaketime_skews_a_python_childs_wall_clock_and_nothing_else(offset: int) -> None:
    env = skewed_env(offset)
    assert abs(measured_skew(env) - offset) < 5
    timing = (
        "import asyncio, threading, time; t = time.monotonic(); time.sleep(0.2); "
        "threading.Event().wait(0.2); asyncio.run(asyncio.sleep(0.2)); print(time.monotonic() - t)"
    )
    probe = subprocess.run(
        [sys.executable, "-c", timing], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert probe.returncode == 0, probe.stderr
    assert 0.6 <= float(probe.stdout) < 2, "sleeps and timed waits must keep their real length"


def _spawn_skewed(args: list[str], env: dict[str, str], log: Path, offset: int) -> object:
    started = time.time()
    process = spawn_cli(args, {**env, **(skewed_env(offset) if offset else {})}, log)
    wait_for(lambda: log.exists() and log.read_text().strip(), 30, f"{log.name} to log")
    seen = time.time()
    # It logged between its start and now, by its own clock: however long a busy machine took to
    # start it (11 s once, beside a kill -9 test), its skew lies between these two.
    logged = first_log_time(log)
    assert logged - seen - 1 <= offset <= logged - started + 1, "the child's own clock is not skewed"
    return process


@pytest.mark.parametrize(
    ("owner_offset", "other_offset"),
    [
        pytest.param(
            0,
            SKEW,
            id="rescuer-ahead",
        ),
        pytest.param(
            -SKEW,
            0,
            id="owner-behind",
        ),
    ],
)
def test_no_live_job_is_stolen(postgres_target: Target, tmp_path: Path, owner_offset: int, other_offset: int) -> None:
    spans = tmp_path / "spans.log"
    env = fault_env(postgres_target, spans)
    app = faults_app(postgres_target)
    # due for every clock, so the owner, whichever its skew, claims it at once
    job = app.get_handler("work").configure(run_at=datetime.now(UTC) - timedelta(minutes=5)).defer(ms=6000)
    owner = _spawn_skewed([*WORKER, *LEASE], env, tmp_path / "owner.log", owner_offset)
    other = None
    try:
        wait_for(lambda: read_spans(spans), 30, "the job to start")
        other = _spawn_skewed([*WORKER, *LEASE], env, tmp_path / "other.log", other_offset)
        job.wait(60)
    finally:
        codes = [stop(p) for p in (owner, other) if p is not None]  # type: ignore[arg-type]
        app.close()
    assert codes == [0, 0]
    runs = [s for s in read_spans(spans) if s.job_id == job.id]
    outcomes = [a.outcome for a in job.attempts_log()]
    assert len(runs) == 1 and outcomes == [AttemptOutcome.SUCCEEDED], (runs, outcomes)


def test_a_worker_ahead_does_not_start_a_delayed_job_early(postgres_target: Target, tmp_path: Path) -> None:
    spans = tmp_path / "spans.log"
    app = faults_app(postgres_target)
    job = app.get_handler("work").configure(delay=20).defer(ms=10)
    worker = _spawn_skewed([*WORKER, *LEASE], fault_env(postgres_target, spans), tmp_path / "w.log", SKEW)
    try:
        time.sleep(5)
        status = job.refresh().status
    finally:
        assert stop(worker) == 0  # type: ignore[arg-type]
        app.close()
    assert not read_spans(spans), f"started {20 - 5} s early at least"
    assert status is JobStatus.SCHEDULED, status


def test_a_job_deferred_with_a_delay_by_a_host_behind_is_not_started_early(
    postgres_target: Target, tmp_path: Path
) -> None:
    spans = tmp_path / "spans.log"
    env = fault_env(postgres_target, spans)
    app = faults_app(postgres_target)
    app.publish_crons()  # migrates and publishes the handlers before the CLI defers
    deferred = run_cli(
        ["defer", "work", "--args", json.dumps({"ms": 10}), "--delay", "30"], {**env, **skewed_env(-SKEW)}
    )
    assert deferred.returncode == 0, deferred.stderr
    worker = spawn_cli([*WORKER, *LEASE], env, tmp_path / "w.log")
    try:
        time.sleep(5)
    finally:
        assert stop(worker) == 0
        app.close()
    assert not read_spans(spans), "a job delayed by 30 s ran within 5 s"


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(
            SKEW,
            id="ahead",
        ),
        pytest.param(-SKEW, id="behind"),
    ],
)
def test_crons_fire_once_and_never_early_beside_a_skewed_scheduler(
    postgres_target: Target, tmp_path: Path, offset: int
) -> None:
    spans = tmp_path / "spans.log"
    env = fault_env(postgres_target, spans)
    processes = [
        spawn_cli([*WORKER, *LEASE], env, tmp_path / "worker.log"),
        spawn_cli(SCHEDULER, env, tmp_path / "scheduler.log"),
    ]
    try:
        wait_for(lambda: read_cron_fires(spans), 30, "the first fire")
        processes.append(_spawn_skewed(SCHEDULER, env, tmp_path / "skewed.log", offset))  # type: ignore[arg-type]
        time.sleep(8)
    finally:
        codes = [stop(p) for p in processes]
    assert codes == [0, 0, 0]
    fires = read_cron_fires(spans)
    duplicates = [at for at, n in Counter(at for _, at, _ in fires).items() if n > 1]
    early = [(at, ran) for _, at, ran in fires if ran < datetime.fromisoformat(at).timestamp() - 0.01]
    assert len(fires) >= 5, f"fires missed: {len(fires)} runs of an every-second cron in 8+ s"
    assert not duplicates, f"cron fired twice for {duplicates}"
    assert not early, f"cron jobs ran before their fire time: {early}"
