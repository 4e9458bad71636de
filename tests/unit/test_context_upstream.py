"""``Context.upstream`` of an async step: read before the call, on a thread, once."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from jobstead.context import Context
from jobstead.status import JobStatus
from jobstead.store.records import Upstream


def _context(read: object) -> Context:
    return Context(
        job_id=1,
        handler="h",
        attempt=1,
        max_attempts=1,
        queue="default",
        args={},
        tenant=None,
        metadata=None,
        checkpoint_data=None,
        worker_id="w",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        save_checkpoint=lambda _: True,
        workflow_id=1,
        step="s",
        read_upstream=read,  # type: ignore[arg-type]
    )


def test_the_read_runs_once_off_the_loop_thread_and_is_kept() -> None:
    threads: list[int] = []

    def read() -> list[Upstream]:
        threads.append(threading.get_ident())
        return [Upstream("a", JobStatus.SUCCEEDED, 1, None)]

    ctx = _context(read)

    async def run() -> None:
        await ctx.read_upstream_off_loop()
        await ctx.read_upstream_off_loop()

    asyncio.run(run())
    assert ctx.upstream == {"a": 1} and ctx.upstream_failures == {}
    assert len(threads) == 1 and threads[0] != threading.get_ident()


def test_a_failed_read_is_raised_where_the_handler_reads_upstream() -> None:
    def read() -> list[Upstream]:
        raise ConnectionError("database gone")

    ctx = _context(read)
    asyncio.run(ctx.read_upstream_off_loop())  # the worker's call: never raises itself
    with pytest.raises(ConnectionError, match="database gone"):
        _ = ctx.upstream
