"""Completion writes beside the one in flight, under a global limit (``CompletionWriter``, ``ClaimLoop.hand_off``).

A job that ends while a completion write is in flight gets a write of its own
beside it, with a hand-off of its own: the slot it held takes the next job
without waiting for that write. Here the write in flight is held for real:
another connection holds the lock on a row it writes.

On PostgreSQL and MariaDB: SQLite lets one transaction write at a time, so no
write can go ahead of another there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, select, text

from jobstead import App, JobStatus
from jobstead.store import Completion, HandOff
from jobstead.store.leases import Leases
from jobstead.worker.worker import Worker
from tests.conftest import Target

#: No claim but the first one and the writes' hand-offs (the poll interval is long): what a write
#: beside the held one claims is what starts. The leases outlast every wait on a held row.
WORKER = {"concurrency": 4, "poll_interval": 5.0, "lease_seconds": 30.0}


@pytest.fixture
def target(server_target: Target) -> Target:
    return server_target


@contextlib.contextmanager
def _holding(app: App, job_id: int) -> Iterator[Connection]:
    """The lock on a job's row, held by a transaction of another connection until the block ends."""
    jobs = app.store.tables.jobs
    with app.store.db.engine.connect() as conn, conn.begin() as transaction:
        conn.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())
        try:
            yield conn
        finally:
            transaction.rollback()


async def _until(event: threading.Event, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_job_that_ends_while_a_write_is_held_is_written_and_handed_on_beside_it(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
) -> None:
    """A and B run under a global limit of 2; A's completion write waits on a row lock; B ends
    meanwhile. Before, B's completion waited for A's write, and so did the job its slot was to take
    (C): both slots idled. Now B's write goes beside A's and hands B's slot to C, then C's to D."""
    app = make_app()
    a_ending, a_held = threading.Event(), threading.Event()
    started: dict[int, float] = {}

    @app.handler(concurrency=2)
    async def limited(n: int) -> int:
        if n == 0:
            a_ending.set()
            await _until(a_held)
        elif n == 1:
            await _until(a_held)
            await asyncio.sleep(0.3)  # A's write is in flight by now, waiting on the lock
        else:
            started[n] = time.monotonic()
        return n

    jobs = limited.defer_many([{"n": n} for n in range(4)])
    a = jobs[0]
    with running_worker(app, **WORKER):
        assert a_ending.wait(15), "A and B started"
        with _holding(app, a.id):
            a_held.set()
            handed_on = _wait_for(lambda: {2, 3} <= started.keys(), timeout=5)
            a_status = app.get_job(a.id).status
        assert handed_on, f"the jobs after B waited for A's write: started {sorted(started)}"
        assert a_status is JobStatus.RUNNING, "A's write was still held when C and D ran"
        assert [app.get_job(job.id).wait(timeout=15) for job in jobs] == [0, 1, 2, 3]


def test_a_write_beside_another_that_fails_is_tried_again_and_nothing_is_lost(
    postgres_target: Target,
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B's write goes beside A's held one, waits on a lock of its own, and its connection is killed:
    its hand-off rolled back, B's completion waits to be written again (its lease renewed meanwhile),
    and is, once A's write is back; the job B's slot goes to runs then, and every job once."""
    failed: list[tuple[list[int], BaseException]] = []
    complete = Leases.complete

    def recorded(self: Leases, completions: Sequence[Completion], hand_off: HandOff | None = None) -> Any:
        try:
            return complete(self, completions, hand_off)
        except Exception as exc:
            failed.append(([c.job_id for c in completions], exc))
            raise

    monkeypatch.setattr(Leases, "complete", recorded)
    app = App(postgres_target.url, schema=postgres_target.schema)
    a_ending, b_held = threading.Event(), threading.Event()

    @app.handler(concurrency=2)
    async def limited(n: int) -> int:
        if n == 0:
            a_ending.set()
            await _until(b_held)
        elif n == 1:
            await _until(b_held)
            await asyncio.sleep(0.3)
        return n

    try:
        jobs = limited.defer_many([{"n": n} for n in range(4)])
        a, b = jobs[0], jobs[1]
        with running_worker(app, **WORKER) as worker:
            assert a_ending.wait(15), "A and B started"
            with _holding(app, a.id) as a_holder, _holding(app, b.id):
                b_held.set()
                a_pid = a_holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
                with app.store.db.engine.connect() as admin:

                    def kill_b_write() -> bool:
                        """Kill the completion write that waits, but not on A's row (on B's: maybe behind
                        a lease renewal waiting for it too)."""
                        killed = admin.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE query LIKE '%jsonb_array_elements%'"  # a completion
                                " AND cardinality(pg_blocking_pids(pid)) > 0"
                                " AND NOT CAST(:a_pid AS int) = ANY(pg_blocking_pids(pid))"
                            ),
                            {"a_pid": a_pid},
                        ).all()
                        admin.commit()
                        return bool(killed)

                    assert _wait_for(kill_b_write, timeout=10), "B's write went beside A's and waited on B's row"
                assert _wait_for(lambda: bool(failed), timeout=10)
                runner = worker._runner
                assert runner is not None
                # Unwritten again, and renewed as such; the job after it did not start (the claim rolled back).
                assert _wait_for(lambda: b.id in runner.held(), timeout=10)
                assert app.get_job(jobs[2].id).status is JobStatus.QUEUED
            assert [app.get_job(job.id).wait(timeout=15) for job in jobs] == [0, 1, 2, 3]
        assert [ids for ids, _ in failed] == [[b.id]]
        assert app.store.is_transient(failed[0][1]), failed[0][1]
        records = [app.store.queries.get_job(job.id) for job in jobs]
        assert [(r.status, r.attempts) for r in records if r is not None] == [(JobStatus.SUCCEEDED, 1)] * 4
    finally:
        app.close()
