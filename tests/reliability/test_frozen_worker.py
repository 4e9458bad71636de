"""A worker frozen (SIGSTOP: a long GC or VM pause) for longer than its lease.

Frozen at a random moment, it may be in the middle of any write: none may leave
the job's row locked (``test_frozen_locks`` freezes each write on purpose).

Another worker takes the job over; when the frozen one wakes it must notice it
lost the lease, stop the job through ``ctx.cancelled``, write neither its
completion nor a checkpoint, and go on serving other jobs (issue 13).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from jobstead import JobStatus
from jobstead.status import AttemptOutcome
from tests.apps.faults import read_spans
from tests.conftest import Target
from tests.reliability.conftest import WORKER, fault_env, faults_app, wait_for
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 2.0
FROZEN = 3 * LEASE


def test_a_frozen_worker_loses_the_job_stops_it_on_waking_and_keeps_working(
    postgres_target: Target, tmp_path: Path
) -> None:
    spans = tmp_path / "spans.log"
    env = fault_env(postgres_target, spans)
    args = [*WORKER, "--lease-seconds", str(LEASE)]
    app = faults_app(postgres_target)
    # Long enough to be still running once the other worker is up, however loaded the machine;
    # it ends early once the test has seen what it watches for (``finish``).
    finish = tmp_path / "finish"
    job = app.get_handler("steps").defer(count=6000, ms=50, until=str(finish))
    frozen = spawn_cli(args, env, tmp_path / "frozen.log")
    taker = None
    try:
        wait_for(lambda: (job.refresh().record.checkpoint or {}).get("pid") == frozen.pid, 30, "the first checkpoint")
        # The other worker is up before the freeze, so what is timed is the takeover, not
        # how long a Python process takes to start on a loaded machine.
        taker_log = tmp_path / "taker.log"
        taker = spawn_cli(args, env, taker_log)
        taker_pid = taker.pid
        wait_for(lambda: taker_log.exists() and " started: " in taker_log.read_text(), 60, "the other worker")
        os.kill(frozen.pid, signal.SIGSTOP)
        assert job.refresh().status is JobStatus.RUNNING, "the job ended before the freeze: make it longer"
        stopped_at = time.time()
        wait_for(lambda: (job.refresh().record.checkpoint or {}).get("pid") == taker_pid, 30, "the takeover")
        taken_after = time.time() - stopped_at
        time.sleep(max(0.0, FROZEN - (time.time() - stopped_at)))

        # From waking on, watch every checkpoint the job shows: none may be the frozen worker's.
        writers: set[int] = set()
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                writers.add(int((app.get_job(job.id).record.checkpoint or {}).get("pid", 0)))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        os.kill(frozen.pid, signal.SIGCONT)
        try:
            wait_for(
                lambda: any(s.pid == frozen.pid and s.how == "stop" for s in read_spans(spans)),
                15,
                "the woken worker to stop its job",
            )
            # One more lease of watching, for a late completion or checkpoint of the woken worker.
            time.sleep(LEASE)
            assert job.refresh().status is JobStatus.RUNNING, "the job ended before the watch did: make it longer"
            finish.touch()
            job.wait(120)
        finally:
            watching.set()
            watcher.join(5)
        assert frozen.poll() is None, "the woken worker exited"
        assert stop(taker) == 0
        taker = None

        # It keeps working: the next jobs run there.
        later = [app.get_handler("work").defer(ms=10) for _ in range(3)]
        for j in later:
            j.wait(30)
    finally:
        for p in (frozen, taker):
            if p is not None:
                os.kill(p.pid, signal.SIGCONT)
        codes = [stop(p) for p in (frozen, taker) if p is not None]
        app.close()
    assert codes == [0]
    assert taken_after < LEASE + 5, f"taken over {taken_after:.1f} s after the freeze, lease {LEASE} s"
    assert frozen.pid not in writers, "the woken worker wrote a checkpoint after losing the lease"
    job.refresh()
    assert job.status is JobStatus.SUCCEEDED
    mine = [s for s in read_spans(spans) if s.job_id == job.id]
    assert sorted((s.pid, s.how) for s in mine) == sorted([(frozen.pid, "stop"), (taker_pid, "end")]), mine
    assert job.result == next(s.marker for s in mine if s.how == "end"), "the completion is not the taker's"
    log = job.attempts_log()
    assert [a.outcome for a in log] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert log[0].worker_id is not None and str(frozen.pid) in log[0].worker_id
    assert log[1].worker_id is not None and str(frozen.pid) not in log[1].worker_id
    assert all(s.pid == frozen.pid for s in read_spans(spans) if s.job_id in {j.id for j in later})
    assert "lease lost" in (tmp_path / "frozen.log").read_text()
