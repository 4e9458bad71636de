"""oban (the Python Oban, ``oban`` on PyPI): a class worker, ``enqueue``/``enqueue_many``, one queue per process.

Configured the way its ``oban start`` CLI runs (its docs call the CLI the
recommended way to run workers): uvloop, orjson for JSON, the default psycopg
pool (1-10 connections) and the default 5 ms fetch debounce; the queue's
``limit`` (jobs in flight per process) is the one throughput knob, measured with
``bench.tune``. Oban fetches up to ``limit - running`` jobs per query and
acknowledges completed jobs in one transaction per fetch round.
"""

from __future__ import annotations

from typing import Any

from ..probe import Reporter
from . import System

#: The queue's ``limit`` per worker process (its docs: "the maximum number of
#: concurrent jobs"); measured best with ``bench.tune`` (bench/README.md has the figures).
LIMIT = 200

#: The worker process's reporter; set by ``bench.worker`` before Oban starts.
reporter: Reporter | None = None


def _define_worker() -> Any:
    from oban import worker

    @worker(queue="default")
    class Noop:
        async def process(self, job: Any) -> None:
            if reporter is not None:
                reporter.job_started(float(job.args.get("t", 0.0)))

    return Noop


_noop: Any = None


def noop_worker() -> Any:
    """The worker class, defined once per process (oban registers it by name on definition)."""
    global _noop
    if _noop is None:
        _noop = _define_worker()
    return _noop


class Oban(System):
    name = "oban"
    remaining_sql = "SELECT count(*) FROM oban_jobs WHERE state IN ('available', 'scheduled', 'executing', 'retryable')"
    unfinished_sql = (
        "SELECT EXISTS (SELECT FROM oban_jobs WHERE state IN ('available', 'scheduled', 'executing', 'retryable'))"
    )
    succeeded_sql = "SELECT count(*) FROM oban_jobs WHERE state = 'completed'"
    reset_sql = "TRUNCATE oban_jobs"
    knob = "--concurrency"
    knob_value = LIMIT

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._pool: Any = None
        self._oban: Any = None

    async def open(self) -> None:
        from oban import Oban as ObanApp
        from oban.schema import install

        from ..worker import libpq_url

        self._pool = await ObanApp.create_pool(libpq_url(self.url))
        await install(self._pool)
        # client mode (no queues): this instance only enqueues
        self._oban = ObanApp(pool=self._pool)
        self._noop = noop_worker()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def defer_one(self, t: float = 0.0) -> None:
        await self._oban.enqueue(self._noop.new({"t": t}))

    async def defer_bulk(self, n: int) -> None:
        await self._oban.enqueue_many(*[self._noop.new({"t": 0.0}) for _ in range(n)])

    @property
    def configuration(self) -> str:
        return (
            f"class worker, `Oban(queues={{'default': {self.knob_value}}})` per process as `oban start` runs it "
            "(uvloop, orjson), default pool (1-10) and 5 ms debounce"
        )
