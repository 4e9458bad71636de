"""Cancelling and pausing, from the API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, Context, JobCancelled, JobStatus


def test_cancel_a_queued_job_at_once(app: App) -> None:
    @app.handler
    def later() -> None: ...

    job = later.configure(delay=3600).defer()
    assert job.cancel() is True
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        job.wait(1)


def test_cancel_a_running_async_job(app: App, running_worker: Callable[..., Any]) -> None:
    started = threading.Event()

    @app.handler
    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    with running_worker(app):
        job = forever.defer()
        assert started.wait(10)
        assert job.cancel() is True
        t0 = time.monotonic()
        with pytest.raises(JobCancelled):
            job.wait(10)
        assert time.monotonic() - t0 < 2  # within about one heartbeat (0.2 s in tests)


def test_cancel_a_running_sync_job_cooperatively(app: App, running_worker: Callable[..., Any]) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    @app.handler
    def polite(ctx: Context) -> None:
        started.set()
        while not ctx.wait_cancelled(0.01):
            pass
        saw_cancel.set()

    with running_worker(app):
        job = polite.defer()
        assert started.wait(10)
        job.cancel()
        with pytest.raises(JobCancelled):
            job.wait(10)
    assert saw_cancel.is_set()
    assert job.refresh().status is JobStatus.CANCELLED


@pytest.mark.parametrize("scope", ["handler", "queue", "all"])
def test_paused_jobs_wait_and_resume(app: App, running_worker: Callable[..., Any], scope: str) -> None:
    @app.handler(queue="q1")
    def work() -> str:
        return "done"

    name = {"handler": "work", "queue": "q1", "all": ""}[scope]
    app.store.control.pause(scope, name)  # type: ignore[arg-type]
    with running_worker(app):
        job = work.defer()
        time.sleep(0.5)
        assert job.refresh().status is JobStatus.QUEUED and job.attempts == 0
        app.store.control.resume(scope, name)  # type: ignore[arg-type]
        assert job.wait(10) == "done"


def test_pause_from_the_app_api_and_the_cli(app: App, target: Any, running_worker: Callable[..., Any]) -> None:
    from tests.support.processes import run_cli

    @app.handler
    def work() -> str:
        return "done"

    assert app.pause(handler="work") is True
    assert app.pause(handler="work") is False  # already paused
    done = run_cli(["pause", "--queue", "default"], target.env())
    assert done.returncode == 0 and "queue 'default' paused" in done.stdout
    with running_worker(app, poll_interval=30.0 if target.backend == "postgres" else 0.1):
        job = work.defer()
        time.sleep(0.4)
        assert job.refresh().status is JobStatus.QUEUED
        assert app.resume(handler="work") is True
        time.sleep(0.3)
        assert job.refresh().status is JobStatus.QUEUED  # the queue is still paused
        done = run_cli(["resume", "--queue", "default"], target.env())
        assert done.returncode == 0 and "resumed" in done.stdout
        # on PostgreSQL the resume NOTIFY wakes the worker (its poll interval is 30 s here)
        assert job.wait(5) == "done"


def test_handler_load_counts_due_running_and_failed(app: App) -> None:
    @app.handler
    def h() -> None: ...

    h.defer()
    h.defer()
    h.configure(delay=3600).defer()  # not due: an autoscaler must not count it
    store = app.store
    claimed = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=60)
    assert len(claimed) == 1
    load = store.queries.handler_load("h")
    assert (load.due, load.running, load.failed) == (1, 1, 0)
    assert store.queries.handler_load("other").due == 0


def test_jobs_of_a_gone_pod_are_released_at_once(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobstead.status import AttemptOutcome

    @app.handler
    def h() -> None: ...

    a, b = h.defer(), h.defer()
    store = app.store
    for pod, worker, job in (("pod-a", "w-a", a), ("pod-b", "w-b", b)):
        monkeypatch.setenv("JOBSTEAD_POD_NAME", pod)
        store.registry.register_worker(worker, handlers=["h"], queues=None, concurrency=1)
        claimed = store.claims.claim(worker_id=worker, handlers=["h"], queues=None, limit=1, lease_seconds=3600)
        assert [j.id for j in claimed] == [job.id]
    assert store.registry.running_by_host() == {"pod-a": 1, "pod-b": 1}
    store.leases.release(b.id, "w-b", 1)  # pod-b's worker hands its job back
    assert store.registry.running_by_host() == {"pod-a": 1, "pod-b": 0}
    assert store.leases.release_host("pod-a") == [a.id]  # no waiting for the hour-long lease
    a.refresh()
    assert a.status is JobStatus.RETRYING and a.error is not None and a.error.type == "jobstead.WorkerGone"
    assert [x.outcome for x in a.attempts_log()] == [AttemptOutcome.LOST]
    assert b.refresh().status is JobStatus.QUEUED


def test_retention_prunes_old_finished_jobs_and_keeps_failures_longer(app: App, target: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from tests.support.processes import run_cli

    @app.handler
    def h() -> None: ...

    jobs = h.defer_many([{} for _ in range(6)])
    store = app.store
    t = store.tables.jobs
    now = store.clock()
    ages = {  # job -> (status, finished how long ago)
        jobs[0].id: ("succeeded", timedelta(days=10)),
        jobs[1].id: ("cancelled", timedelta(days=10)),
        jobs[2].id: ("succeeded", timedelta(days=1)),
        jobs[3].id: ("dead", timedelta(days=10)),
        jobs[4].id: ("failed", timedelta(days=40)),
    }  # jobs[5] stays queued: never pruned
    with store.db.engine.begin() as conn:
        for job_id, (status, age) in ages.items():
            conn.execute(update(t).where(t.c.id == job_id).values(status=status, finished_at=now - age))
    assert store.retention.prune(finished=timedelta(days=7), dead=timedelta(days=30), batch=1) == 3
    left = {j.id for j in store.queries.list_jobs()}
    assert left == {jobs[2].id, jobs[3].id, jobs[5].id}
    done = run_cli(["jobs", "purge", "--dead-older-than", "5d"], target.env())
    assert done.returncode == 0 and "purged 1 job(s)" in done.stdout
    bad = run_cli(["jobs", "purge", "--older-than", "soon"], target.env())
    assert bad.returncode == 2 and "expected a duration" in bad.stderr
    assert run_cli(["jobs", "purge"], target.env()).returncode == 2
    assert {j.id for j in store.queries.list_jobs()} == {jobs[2].id, jobs[5].id}
