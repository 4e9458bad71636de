"""A worker given a job it is running: the database lost the claim of that run (an asynchronous failover).

After a failover with an asynchronous standby the new primary may show a job
queued while its first run goes on, and the worker running it may be the one
that claims it again there. That claim is the first news the worker has of
the lost claim (before its next lease renewal): the first run stops at once,
as on a lost lease, and the second starts when it has, never beside it.
Otherwise the renewal says it: hurried when a connection is found lost, and
retried within 0.25 s while it fails.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from sqlalchemy import update

from jobstead import App, Context, JobStatus
from jobstead.services.base import Service, ServiceThread
from jobstead.services.lease_renewer import LeaseRenewer
from tests.conftest import Target, worker_thread


def test_a_job_claimed_again_while_it_runs_here_stops_its_first_run(target: Target) -> None:
    app = App(target.url, schema=target.schema)
    spans: list[tuple[str, int, float]] = []  # (start|stop|end, run, at)
    first_started = threading.Event()

    @app.handler(max_attempts=5, retry=0)
    async def long(ctx: Context) -> int:
        run = sum(1 for kind, _, _ in spans if kind == "start") + 1
        spans.append(("start", run, time.monotonic()))
        first_started.set()
        try:
            await asyncio.sleep(60 if run == 1 else 0.1)
        except asyncio.CancelledError:
            spans.append(("stop", run, time.monotonic()))
            raise
        spans.append(("end", run, time.monotonic()))
        return run

    try:
        job = long.defer()
        # No renewal before the claim (heartbeat 20 s): the claim is the worker's only news.
        with worker_thread(app, lease_seconds=60, heartbeat_seconds=20, poll_interval=0.05, concurrency=2):
            assert first_started.wait(30)
            store = app.open()
            jobs = store.tables.jobs
            # What the new primary shows when its standby never received the claim.
            with store.db.engine.begin() as conn:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id)
                    .values(status=JobStatus.QUEUED.value, lease_owner=None, lease_expires_at=None)
                )
            assert job.wait(15) == 2
        first_stop = [at for kind, run, at in spans if kind == "stop" and run == 1]
        second_start = [at for kind, run, at in spans if kind == "start" and run == 2]
        assert first_stop and second_start, spans
        assert first_stop[0] <= second_start[0], spans  # never both at once
        assert [kind for kind, _, _ in spans] == ["start", "stop", "start", "end"], spans
    finally:
        app.close()


class _Counting(Service):
    """Counts its runs; fails while ``failing`` is set."""

    name = "counting"

    def __init__(self, every: float, retry_within: float | None = None) -> None:
        super().__init__(every)
        self.retry_within = retry_within
        self.runs: list[float] = []
        self.failing = False

    def run_once(self) -> None:
        self.runs.append(time.monotonic())
        if self.failing:
            raise OSError("connection refused")


def test_a_lost_connection_hurries_the_renewal_and_a_failed_one_is_retried_within_its_bound() -> None:
    """What bounds the overlap: a renewal now rather than at its hour, and no backoff beyond 0.25 s."""
    assert LeaseRenewer.retry_within == 0.25
    service = _Counting(every=60, retry_within=0.25)
    thread = ServiceThread("test-hurry", [service], start_delayed=False)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not service.runs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(service.runs) == 1  # then not for 60 s ...
        service.failing = True
        thread.hurry()  # ... unless hurried
        time.sleep(1.6)
        # Failing from the hurry on: retried every 0.25 s at most, not 0.5, 1, 2 s apart.
        failures = service.runs[1:]
        assert len(failures) >= 5, service.runs
        assert max(b - a for a, b in itertools.pairwise(failures)) < 0.4, service.runs
    finally:
        thread.stop()
