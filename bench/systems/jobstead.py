"""Jobstead: the ``App`` API, ``defer``/``defer_many``, workers via ``app.worker(...).run()``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from jobstead import App

from ..probe import Reporter, SlotMeter
from . import System

#: Jobs in flight per worker process. A claim takes as many jobs as there are free
#: slots, so this is also the claim batch size; measured best with ``bench.tune``
#: (bench/README.md has the figures).
CONCURRENCY = 2000

#: The steady-state job's wait, seconds (uniform): mean 10 ms.
IO_MIN, IO_MAX = 0.005, 0.015


def spread_name(i: int, queues: int) -> tuple[str, str]:
    """Handler ``i`` of the many-handlers app, and its queue: handlers go round the queues."""
    return f"h{i:04d}", f"q{i % queues:03d}"


def build_app(
    url: str,
    *,
    limit: int | None = None,
    reporter: Reporter | None = None,
    spread: tuple[int, int] | None = None,
    flow: dict[str, Any] | None = None,
) -> App:
    """The app both sides use: a worker process (with a reporter) and the harness (deferring).

    ``spread=(handlers, queues)`` adds that many no-op handlers (``h0000`` ...) over
    that many queues (``q000`` ...), for ``bench.scale``'s many-handlers drain.
    """
    app = App(url)
    for i in range(spread[0] if spread else 0):
        assert spread is not None
        name, queue = spread_name(i, spread[1])
        app.handler(name=name, queue=queue)(_spread_handler(reporter))

    @app.handler(concurrency=limit, **(flow or {}))  # flow: flow control options (bench.flow)
    async def noop(t: float, key: str | None = None, pause: float = 0.0) -> None:
        if reporter is not None:
            reporter.job_started(t)
        if pause:  # bench.flow's limit with 10 ms jobs
            await asyncio.sleep(pause)

    meter = SlotMeter(reporter) if reporter is not None else None

    @app.handler
    async def io(t: float) -> None:
        """The steady-state job: waits 5-15 ms (uniform), as a job waiting on I/O would."""
        if meter is not None:
            assert reporter is not None
            reporter.job_started(0.0)  # the drain's "first" report; the delay goes to the meter
            meter.started(t)
        try:
            await asyncio.sleep(random.uniform(IO_MIN, IO_MAX))
        finally:
            if meter is not None:
                meter.finished()

    return app


def _spread_handler(reporter: Reporter | None) -> Any:
    """A fresh function per handler (each ``Handler`` inspects its own), doing what ``noop`` does."""

    async def run(t: float) -> None:
        if reporter is not None:
            reporter.job_started(t)

    return run


class Jobstead(System):
    name = "jobstead"
    # Two counts, each matching a partial index's predicate exactly (ready, running), so
    # polling stays an index scan of the live jobs even with a million finished ones.
    remaining_sql = (
        "SELECT (SELECT count(*) FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying'))"
        " + (SELECT count(*) FROM jobstead_jobs WHERE status = 'running')"
    )
    unfinished_sql = (
        "SELECT EXISTS (SELECT FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying'))"
        " OR EXISTS (SELECT FROM jobstead_jobs WHERE status = 'running')"
    )
    succeeded_sql = "SELECT count(*) FROM jobstead_jobs WHERE status = 'succeeded'"
    reset_sql = "TRUNCATE jobstead_jobs, jobstead_attempts"
    knob = "--concurrency"
    knob_value = CONCURRENCY

    def __init__(self, url: str, *, limit: int | None = None, spread: tuple[int, int] | None = None) -> None:
        super().__init__(url)
        self.limit = limit
        self.spread = spread
        self._app: App | None = None
        self._noop: Any = None

    @property
    def app(self) -> App:
        assert self._app is not None, "open() first"
        return self._app

    async def open(self) -> None:
        self._app = build_app(self.url, limit=self.limit, spread=self.spread)
        self._noop = self._app.get_handler("noop")
        await asyncio.to_thread(lambda: self._app and self._app.store)  # migrate + publish handlers

    async def close(self) -> None:
        if self._app is not None:
            self._app.close()

    async def defer_one(self, t: float = 0.0) -> None:
        # The sync API is Jobstead's primary one (defer_async only hops to a thread).
        self._noop.defer(t=t)

    async def defer_bulk(self, n: int) -> None:
        self._noop.defer_many([{"t": 0.0}] * n)

    def worker_options(self) -> list[str]:
        options = super().worker_options()
        if self.limit is not None:
            options += ["--limit", str(self.limit)]
        if self.spread is not None:
            options += ["--spread", f"{self.spread[0]}x{self.spread[1]}"]
        return options

    @property
    def configuration(self) -> str:
        return (
            f"async handler, `app.worker(concurrency={self.knob_value})` per process (a claim takes as many "
            "jobs as there are free slots), SQLAlchemy pool defaults (10 + 20 overflow), GC first threshold 10,000 "
            "(what `run()` sets)"
        )


class JobsteadIO(Jobstead):
    """The steady-state workload's system: ``io`` jobs (5-15 ms) and 25 slots per process.

    4 processes x 25 slots x 10 ms per job: the slots can take 10,000 jobs/s.
    """

    knob_value = 25

    async def defer_bulk(self, n: int) -> None:
        self._app.get_handler("io").defer_many([{"t": 0.0}] * n)  # type: ignore[union-attr]
