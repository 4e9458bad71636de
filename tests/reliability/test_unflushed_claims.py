"""A claim's commit does not wait for the WAL flush; a crash before the flush loses nothing.

On PostgreSQL the claim sets ``synchronous_commit = off`` for its own
transaction, so a claim costs no fsync. These tests run a durable server (fsync
on, unlike the other tests' server) and hold its WAL writer still with SIGSTOP,
so nothing flushes the log behind the test's back: an unflushed claim stays
unflushed until a commit that waits (a completion, a defer) flushes it, or the
server crashes. The crash is a real one: ``kill -9`` of the WAL writer makes the
postmaster end every backend and recover from what reached the log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest

from jobstead import App
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, Completion, HandOff, NewJob, Store
from tests.conftest import worker_thread
from tests.support.postgres_server import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def durable_server() -> Iterator[PostgresServer]:
    # autovacuum off: its commits would flush the log too
    server = PostgresServer(durable=True, settings=["autovacuum=off", "wal_writer_delay=10000"]).start()
    try:
        yield server
    finally:
        server.cleanup()


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _walwriter(server: PostgresServer) -> int:
    with psycopg.connect(_libpq(server.url()), autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'").fetchone()
    assert row is not None, "no WAL writer process"
    return int(row[0])


def _unflushed_bytes(server: PostgresServer) -> int:
    with psycopg.connect(_libpq(server.url()), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn()").fetchone()
    assert row is not None
    return int(row[0])


def _crash(server: PostgresServer, walwriter: int) -> None:
    """kill -9 of a server process: the postmaster resets every backend and recovers from the log."""
    os.kill(walwriter, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(_libpq(server.url()), autocommit=True, connect_timeout=2) as conn:
                pid = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'").fetchone()
                if pid is not None and int(pid[0]) != walwriter:
                    return
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the server did not recover within 60 s")
        time.sleep(0.2)


def _claim(store: Store) -> list[ClaimedJob]:
    return store.claims.claim(worker_id="w1", handlers=["work"], queues=None, limit=1, lease_seconds=300)


def _succeeded(store: Store, claimed: ClaimedJob) -> Completion:
    """``claimed``'s successful attempt, by the worker ``_claim`` claims for."""
    return Completion(
        job_id=claimed.id,
        owner="w1",
        attempt=claimed.attempts,
        outcome=AttemptOutcome.SUCCEEDED,
        status=JobStatus.SUCCEEDED,
        finished_at=store.clock(),
    )


@pytest.fixture
def stilled(durable_server: PostgresServer) -> Iterator[tuple[Store, int]]:
    """A migrated store on the durable server with one job deferred, and the WAL writer stopped."""
    store = Store.connect(durable_server.create_database("unflushed"))
    store.migrate()
    store.enqueue.insert([NewJob(handler="work", args={}, queue="default")])  # waits for its flush
    walwriter = _walwriter(durable_server)
    os.kill(walwriter, signal.SIGSTOP)
    try:
        yield store, walwriter
    finally:
        store.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(walwriter, signal.SIGCONT)


def test_a_claim_commits_without_waiting_for_the_flush(
    durable_server: PostgresServer, stilled: tuple[Store, int]
) -> None:
    store, _ = stilled
    assert _unflushed_bytes(durable_server) == 0, "the defer's commit waited for its flush"
    assert len(_claim(store)) == 1  # the first claim: a transaction that reads pauses and limits first
    assert _unflushed_bytes(durable_server) > 0, "the claim's commit waited for its flush"

    store.enqueue.insert([NewJob(handler="work", args={}, queue="default")])  # flushes the claim with it
    assert _unflushed_bytes(durable_server) == 0
    assert len(_claim(store)) == 1  # nothing stood in the way: one autocommitted statement now
    assert _unflushed_bytes(durable_server) > 0, "the one-statement claim's commit waited for its flush"


def test_a_crash_before_the_flush_gives_the_job_back_and_a_worker_runs_it_once(
    durable_server: PostgresServer, stilled: tuple[Store, int]
) -> None:
    store, walwriter = stilled
    [claimed] = _claim(store)
    assert _unflushed_bytes(durable_server) > 0
    _crash(durable_server, walwriter)
    store.db.engine.dispose()  # the pool's connections died with the backends

    job = store.queries.get_job(claimed.id)
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0), "the unflushed claim survived the crash"

    calls: list[int] = []
    app = App(durable_server.url("unflushed"))

    @app.handler(name="work")
    def work() -> None:
        calls.append(1)

    with worker_thread(app):
        deadline = time.monotonic() + 30
        while (found := store.queries.get_job(claimed.id)) is not None and found.status is not JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the job given back was not run"
            time.sleep(0.05)
    app.close()
    assert calls == [1]
    assert [a.outcome for a in store.queries.attempts(claimed.id)] == [AttemptOutcome.SUCCEEDED]


def test_a_completion_flushes_its_claim_with_it(durable_server: PostgresServer, stilled: tuple[Store, int]) -> None:
    store, walwriter = stilled
    [claimed] = _claim(store)
    finished = _succeeded(store, claimed)
    store.leases.complete([finished])
    assert _unflushed_bytes(durable_server) == 0
    _crash(durable_server, walwriter)
    store.db.engine.dispose()  # the pool's connections died with the backends
    job = store.queries.get_job(claimed.id)
    assert job is not None and (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


def test_a_hand_off_claimed_in_one_statement_waits_for_the_flush_with_its_completion(
    durable_server: PostgresServer, stilled: tuple[Store, int]
) -> None:
    """A claimer nothing stands in the way of hands off in one statement inside the completion's
    transaction (``Claims.claim_in``): that statement must not turn the completion's commit into
    one that skips the flush, as the claim's own does."""
    store, _ = stilled
    [claimed] = _claim(store)  # the first claim: nothing in the way, so the next are one statement
    store.enqueue.insert([NewJob(handler="work", args={}, queue="default")])  # flushes the claim
    hand_off = HandOff("w1", ["work"], None, 1, 300)
    finished = _succeeded(store, claimed)
    assert store.leases.complete([finished], hand_off) == set()
    assert hand_off.made and len(hand_off.claimed) == 1
    assert _unflushed_bytes(durable_server) == 0, "the completion's commit skipped its flush"
