"""pgqueuer: asyncpg driver, ``Queries.enqueue``, workers via ``PgQueuer.run(batch_size=...)``."""

from __future__ import annotations

from typing import Any

from . import System

#: Jobs per dequeue round trip. Its docs: raise ``batch_size`` for short jobs
#: (default 10); measured best with ``bench.tune`` (bench/README.md has the figures).
BATCH_SIZE = 2000


class PgQueuer(System):
    name = "pgqueuer"
    # A finished job's row is deleted from ``pgqueuer`` when its status is logged.
    remaining_sql = "SELECT count(*) FROM pgqueuer"
    unfinished_sql = "SELECT EXISTS (SELECT FROM pgqueuer)"
    succeeded_sql = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
    reset_sql = "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics"
    knob = "--batch-size"
    knob_value = BATCH_SIZE

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._connection: Any = None
        self._queries: Any = None

    async def open(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        from ..worker import libpq_url

        self._connection = await asyncpg.connect(dsn=libpq_url(self.url))
        self._queries = Queries(AsyncpgDriver(self._connection))
        await self._queries.install()
        await self._queries.optimize_autovacuum()  # `pgq autovac`, the docs' first checklist item

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def defer_one(self, t: float = 0.0) -> None:
        await self._queries.enqueue("noop", repr(t).encode(), 0)

    async def defer_bulk(self, n: int) -> None:
        await self._queries.enqueue(["noop"] * n, [b"0"] * n, [0] * n)

    @property
    def configuration(self) -> str:
        return (
            f"async entrypoint, asyncpg connection, `PgQueuer.run(batch_size={self.knob_value})`, "
            "`pgq autovac` settings, durable tables"
        )
