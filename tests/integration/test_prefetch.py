"""Jobs the worker claimed ahead of its free slots (``worker/prefetch.py``): leased, cancellable, released.

A claimed-but-not-started job is ``running`` in the database. These tests hold
jobs in the buffer on purpose (a fixed ``ahead`` of 2 with one slot busy) and
check what the buffer must never do: run a job cancelled while it waited, lose
a job when the worker stops, or claim ahead of a handler with a global limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from jobstead import App, JobStatus
from jobstead.worker import claiming
from jobstead.worker import worker as worker_module
from jobstead.worker.prefetch import ClaimPace
from tests.conftest import Target

pytestmark = pytest.mark.postgres


@pytest.fixture
def target(postgres_target: Target) -> Target:
    return postgres_target


class _TwoAhead(ClaimPace):
    """The real buffer with its size fixed at 2, so a test knows what is buffered."""

    @property
    def ahead(self) -> int:
        return 2


@pytest.fixture
def two_ahead(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(claiming, "ClaimPace", _TwoAhead)
    yield


def buffered(worker: worker_module.Worker) -> int:
    """How many jobs the worker holds claimed but not started."""
    runner = worker._runner
    return 0 if runner is None else len(runner.buffered)


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_a_job_cancelled_while_buffered_never_runs(
    two_ahead: None,
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[worker_module.Worker]],
) -> None:
    app = make_app()
    release = threading.Event()
    ran: list[int] = []

    @app.handler
    async def slow(n: int) -> None:
        ran.append(n)
        while not release.is_set():
            await asyncio.sleep(0.01)

    with running_worker(app, concurrency=1) as worker:
        first = slow.defer(n=0)
        wait_for(lambda: ran == [0])
        waiting = [slow.defer(n=i) for i in (1, 2)]
        wait_for(lambda: buffered(worker) == 2)  # claimed, not started: one slot, busy
        assert all(j.refresh().status is JobStatus.RUNNING for j in waiting)
        assert waiting[0].cancel()
        wait_for(lambda: waiting[0].refresh().status is JobStatus.CANCELLED)
        release.set()
        wait_for(lambda: waiting[1].refresh().status is JobStatus.SUCCEEDED)
        wait_for(lambda: first.refresh().status is JobStatus.SUCCEEDED)
    assert ran == [0, 2], "the cancelled job never started"


def test_stopping_gives_buffered_jobs_back_to_the_queue(
    two_ahead: None,
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[worker_module.Worker]],
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.handler
    async def slow(n: int) -> None:
        ran.append(n)
        await asyncio.sleep(0.3)

    with running_worker(app, concurrency=1) as worker:
        slow.defer(n=0)
        wait_for(lambda: ran == [0])
        waiting = [slow.defer(n=i) for i in (1, 2)]
        wait_for(lambda: buffered(worker) == 2)
    # stopped: the running job finished, the buffered ones are queued again, not started, not lost
    assert ran == [0]
    for job in waiting:
        record = job.refresh().record
        assert record.status is JobStatus.QUEUED
        assert record.lease_owner is None


def test_nothing_is_claimed_ahead_of_a_limited_handler(
    two_ahead: None,
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[worker_module.Worker]],
) -> None:
    app = make_app()
    release = threading.Event()
    ran: list[int] = []

    @app.handler(concurrency=1)
    async def limited(n: int) -> None:
        ran.append(n)
        while not release.is_set():
            await asyncio.sleep(0.01)

    with running_worker(app, concurrency=3) as worker:
        jobs = [limited.defer(n=i) for i in range(3)]
        wait_for(lambda: ran == [0])
        time.sleep(0.5)  # several claim rounds
        assert not buffered(worker)
        assert sum(j.refresh().status is JobStatus.RUNNING for j in jobs) == 1, "the limit holds in the database"
        release.set()
        wait_for(lambda: all(j.refresh().status is JobStatus.SUCCEEDED for j in jobs))
