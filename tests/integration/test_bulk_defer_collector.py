"""A bulk defer runs no garbage collection of its own, on every driver, and leaves the collector on.

Its thousands of jobs, records and handles form no cycles; collecting
over them while they are built found nothing and cost a quarter of the
deferring process's CPU (``jobstead.collector_pause``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from jobstead import App, InvalidArguments
from jobstead.collector_pause import PAUSE_MIN_JOBS
from jobstead.store.queries import JobFilter

JOBS = 3 * PAUSE_MIN_JOBS


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of each collection that starts while the test runs."""
    started: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    was = gc.isenabled()
    gc.enable()
    gc.collect()
    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)
        if was:
            gc.enable()
        else:
            gc.disable()


def settled(collections: list[int]) -> None:
    """Collect now and forget it: the few allocations a call makes before its pause (its
    coroutine, the listed calls) then cannot be the ones that reach the young threshold."""
    gc.collect()
    collections.clear()


@pytest.fixture
def noop(app: App) -> App:
    @app.handler
    def noop(n: int) -> None: ...

    app.store  # noqa: B018  (migrate and publish now, not inside the measured call)
    return app


def test_defer_many_collects_nothing_while_it_runs(noop: App, collections: list[int]) -> None:
    calls = [{"n": i} for i in range(JOBS)]
    settled(collections)
    deferred = noop.get_handler("noop").defer_many(calls)
    assert collections == []
    assert gc.isenabled()
    assert [d.record.args["n"] for d in deferred] == list(range(JOBS))
    assert len(noop.store.queries.list_jobs(JobFilter(limit=JOBS + 1))) == JOBS


def test_defer_many_takes_a_generator(noop: App) -> None:
    deferred = noop.get_handler("noop").defer_many({"n": i} for i in range(JOBS))
    assert [d.record.args["n"] for d in deferred] == list(range(JOBS))
    assert gc.isenabled()


def test_defer_many_async_collects_only_between_its_stretches(noop: App, collections: list[int]) -> None:
    """Paused while it builds, in the thread while it inserts, and while it makes the handles;
    never across an await. What it put off is a young collection at the end of each stretch."""
    handler = noop.get_handler("noop")

    async def defer() -> int:
        await handler.defer_many_async([{"n": -1}])  # the thread pool and the handler's keys, read once
        calls = [{"n": i} for i in range(JOBS)]
        settled(collections)
        deferred = await handler.defer_many_async(calls)
        assert set(collections) <= {0} and len(collections) <= 3, collections
        return len(deferred)

    assert asyncio.run(defer()) == JOBS
    assert gc.isenabled()


def test_a_refused_bulk_defer_turns_the_collector_back_on(noop: App) -> None:
    calls: list[dict[str, Any]] = [{"n": i} for i in range(JOBS)]
    calls[-1] = {"n": "not a number"}
    with pytest.raises(InvalidArguments, match="'n' must be int"):
        noop.get_handler("noop").defer_many(calls)
    assert gc.isenabled()
    assert noop.store.queries.list_jobs() == []
