"""procrastinate: ``PsycopgConnector``, ``defer_async``/``batch_defer_async``, ``run_worker_async``."""

from __future__ import annotations

from typing import Any

from ..probe import Reporter
from . import System

#: Sub-workers (jobs in flight) per process; the docs' example is 30, and for
#: short jobs they ask for a pool of concurrency + 1 connections. 10 measured
#: best with ``bench.tune`` (bench/README.md has the figures).
CONCURRENCY = 10


def build_app(url: str, *, pool_size: int, reporter: Reporter | None = None) -> Any:
    from procrastinate import App, PsycopgConnector

    from ..worker import libpq_url

    app = App(connector=PsycopgConnector(conninfo=libpq_url(url), min_size=1, max_size=pool_size))

    @app.task(name="noop")
    async def noop(t: float) -> None:
        if reporter is not None:
            reporter.job_started(t)

    return app


class Procrastinate(System):
    name = "procrastinate"
    remaining_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    unfinished_sql = "SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    succeeded_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    reset_sql = "TRUNCATE procrastinate_jobs, procrastinate_events CASCADE"
    knob = "--concurrency"
    knob_value = CONCURRENCY

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._app: Any = None
        self._opened: Any = None

    async def open(self) -> None:
        self._app = build_app(self.url, pool_size=4)
        self._opened = self._app.open_async()
        await self._opened.__aenter__()
        await self._app.schema_manager.apply_schema_async()
        self._noop = self._app.tasks["noop"]

    async def close(self) -> None:
        if self._opened is not None:
            await self._opened.__aexit__(None, None, None)

    async def defer_one(self, t: float = 0.0) -> None:
        await self._noop.defer_async(t=t)

    async def defer_bulk(self, n: int) -> None:
        await self._noop.batch_defer_async(*([{"t": 0.0}] * n))

    @property
    def configuration(self) -> str:
        return (
            f"async task, `run_worker_async(concurrency={self.knob_value})`, "
            f"PsycopgConnector pool max_size={self.knob_value + 1}, LISTEN/NOTIFY on"
        )
