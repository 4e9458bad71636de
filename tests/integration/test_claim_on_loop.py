"""The claim awaited on the worker's event loop (``Store.async_alone``, PostgreSQL).

The one-statement claim runs on an async psycopg connection of the loop's own
instead of hopping to a thread and back. It must return exactly what the
claim on a thread returns, survive its connection being killed (one transient
error, then a new connection), and open its connection as the engine opens
its own (a pooler's ``prepare_threshold=none`` included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Iterator
from datetime import UTC

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from jobstead import App, JobStatus
from jobstead.store import Store
from tests.conftest import Target

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_target: Target) -> Iterator[App]:
    app = App(postgres_target.url, schema=postgres_target.schema)

    @app.handler(max_attempts=3)
    def h(n: int, tags: list[str]) -> None: ...

    app.migrate()
    app.store.registry.publish_handlers([h.definition()])
    yield app
    app.close()


def test_a_claim_on_the_loop_returns_what_a_claim_on_a_thread_does(app: App) -> None:
    store = app.store
    h = app.get_handler("h")
    h.defer(n=1, tags=["a", "é"])
    h.defer(n=2, tags=[])
    [on_thread] = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30)

    async def on_loop_claim() -> list:  # type: ignore[type-arg]
        on_loop = store.async_alone()
        assert on_loop is not None
        try:
            return await store.claims.claim_async(
                on_loop, worker_id="w", handlers=["h"], queues=None, limit=10, lease_seconds=30
            )
        finally:
            await on_loop.close()

    [job] = asyncio.run(on_loop_claim())
    assert (on_thread.args, job.args) == ({"n": 1, "tags": ["a", "é"]}, {"n": 2, "tags": []})
    for field in dataclasses.fields(job):  # the same record, field by field, the same types
        assert type(getattr(job, field.name)) is type(getattr(on_thread, field.name)), field.name
    assert (job.handler, job.attempts, job.queue) == (on_thread.handler, 1, on_thread.queue)
    assert job.run_at.utcoffset() == UTC.utcoffset(None)
    record = store.queries.get_job(job.id)
    assert record is not None and record.status is JobStatus.RUNNING and record.lease_owner == "w"


def test_a_killed_loop_connection_fails_one_claim_transiently_and_the_next_reconnects(app: App) -> None:
    store = app.store
    h = app.get_handler("h")
    for i in range(3):
        h.defer(n=i, tags=[])
    store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30)

    async def scenario() -> tuple[int, BaseException, int]:
        on_loop = store.async_alone()
        assert on_loop is not None
        try:
            first = await store.claims.claim_async(
                on_loop, worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30
            )
            pid = on_loop._conn.info.backend_pid  # type: ignore[union-attr]
            with psycopg.connect(_libpq(store)) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            try:
                await store.claims.claim_async(
                    on_loop, worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30
                )
            except DBAPIError as exc:
                failure: BaseException = exc
            else:
                raise AssertionError("a claim on a killed connection succeeded")
            again = await store.claims.claim_async(
                on_loop, worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30
            )
            return len(first), failure, len(again)
        finally:
            await on_loop.close()

    first, failure, again = asyncio.run(scenario())
    assert first == 1 and again == 1
    assert store.is_transient(failure), failure
    # Nothing was lost: the failed claim took no job (its statement never ran).
    queued = [j for j in store.queries.list_jobs() if j.status is JobStatus.QUEUED]
    assert len(queued) == 0 and sum(1 for j in store.queries.list_jobs() if j.status is JobStatus.RUNNING) == 3


def test_the_loop_connection_is_opened_as_the_engines_are(postgres_target: Target) -> None:
    store = Store.connect(postgres_target.url + "?prepare_threshold=none", schema=postgres_target.schema)
    try:

        async def opened() -> tuple[int | None, str]:
            on_loop = store.async_alone()
            assert on_loop is not None
            try:
                conn = await on_loop._connect()
                return conn.prepare_threshold, conn.info.parameter_status("TimeZone") or ""
            finally:
                await on_loop.close()

        assert asyncio.run(opened()) == (None, "UTC")
    finally:
        store.close()


def _libpq(store: Store) -> str:
    return store.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def test_claims_go_through_the_pool_while_the_server_refuses_the_loop_a_connection(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused connection (``max_connections`` reached, here a port nobody listens on) is
    one warning, then the pool's claims, with no new attempt per claim until ``REFUSED_FOR``."""
    store = app.store
    h = app.get_handler("h")
    for i in range(3):
        h.defer(n=i, tags=[])
    store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30)  # now one statement
    with socket.socket() as probe:  # a free port, closed again: connecting to it is refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    on_loop = store.async_alone()
    assert on_loop is not None
    on_loop._conninfo = f"host=127.0.0.1 port={closed_port} dbname=nowhere"
    attempts: list[int] = []
    connect = on_loop._connect

    async def counted() -> object:
        attempts.append(1)
        return await connect()

    on_loop._connect = counted  # type: ignore[method-assign]

    async def two_claims() -> list[int]:
        try:
            got = []
            for _ in range(2):
                jobs = await store.claims.claim_async(
                    on_loop, worker_id="w", handlers=["h"], queues=None, limit=1, lease_seconds=30
                )
                got.append(len(jobs))
            return got
        finally:
            await on_loop.close()

    with caplog.at_level(logging.WARNING, logger="jobstead.store"):
        assert asyncio.run(two_claims()) == [1, 1]  # both claimed, through the pool
    assert attempts == [1], "one connection attempt, not one per claim"
    warnings = [r.getMessage() for r in caplog.records if "claims go through the connection pool" in r.getMessage()]
    assert len(warnings) == 1, caplog.records
