"""chancy: an async job on the ``AsyncExecutor``, ``push``/``push_many``, a ``Worker`` per process.

Its docs: the ``AsyncExecutor`` "is useful for running large numbers of
IO-bound jobs" in the event loop, without the process or thread executors'
overhead; ``eager_polling`` fetches again as soon as a job completes instead of
waiting for the polling interval ("can reduce latency between jobs" when jobs
are continuously available). The queue's ``concurrency`` (jobs in flight per
worker) is the one throughput knob, measured with ``bench.tune``. Completed jobs
are written back in batches every second (``Worker.send_outgoing_interval``,
its default), so a drain's last second is mostly that flush.
"""

from __future__ import annotations

from typing import Any

from ..probe import Reporter
from . import System

#: The queue's ``concurrency`` per worker process; measured best with ``bench.tune``
#: (bench/README.md has the figures).
CONCURRENCY = 50

#: The worker process's reporter; set by ``bench.worker`` before the worker starts.
reporter: Reporter | None = None


async def noop(*, t: float = 0.0) -> None:
    if reporter is not None:
        reporter.job_started(t)


def noop_job() -> Any:
    from chancy import job

    return job(queue="default")(noop)


def build_app(url: str) -> Any:
    import logging

    from chancy import Chancy

    from ..worker import libpq_url

    log = logging.getLogger("bench.chancy")
    log.setLevel(logging.WARNING)  # it logs every pulled job at INFO
    return Chancy(libpq_url(url), log=log)


def queue(concurrency: int) -> Any:
    from chancy import Chancy, Queue

    return Queue("default", concurrency=concurrency, executor=Chancy.Executor.Async, eager_polling=True)


class ChancySystem(System):
    name = "chancy"
    remaining_sql = "SELECT count(*) FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying')"
    unfinished_sql = "SELECT EXISTS (SELECT FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying'))"
    succeeded_sql = "SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded'"
    reset_sql = "TRUNCATE chancy_jobs"
    knob = "--concurrency"
    knob_value = CONCURRENCY

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._app: Any = None

    async def open(self) -> None:
        self._app = build_app(self.url)
        await self._app.__aenter__()
        await self._app.migrate()
        await self._app.declare(queue(self.knob_value), upsert=True)
        self._job = noop_job().job

    async def close(self) -> None:
        if self._app is not None:
            await self._app.__aexit__(None, None, None)

    async def defer_one(self, t: float = 0.0) -> None:
        await self._app.push(self._job.with_kwargs(t=t))

    async def defer_bulk(self, n: int) -> None:
        async for _ in self._app.push_many([self._job.with_kwargs(t=0.0) for _ in range(n)]):
            pass

    @property
    def configuration(self) -> str:
        return (
            f"async job, `Queue(concurrency={self.knob_value}, executor=AsyncExecutor, eager_polling=True)`, "
            "a `Worker` per process, default pool (1-10), completions flushed every 1 s (default)"
        )
