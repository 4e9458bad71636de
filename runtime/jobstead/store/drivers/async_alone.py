"""Autocommitted statements awaited on an event loop: the claim without a thread.

A worker's claim loop runs on its event loop, and a synchronous claim has to
go through a thread: one hop there, one back (the loop is woken through its
self-pipe), 0.4 ms of the 1.7 ms between a defer's commit and its job's start
at 200 jobs/s, and a thread switch each of CPU. On one psycopg async
connection of its own the loop awaits the statement itself.

One connection per loop, never shared: asyncio connections belong to the loop
that opened them, and one claim at a time is in flight per worker anyway. It
is opened on first use and discarded on any error, whatever state that left
it in; the next statement opens a new one. Errors come out as SQLAlchemy's
wrappers, like those of every other store call, so a caller's transient-error
handling is the same on either path.

A connection the server refuses (``max_connections`` reached, or it is down)
is not retried for every claim: ``usable`` says no for ``REFUSED_FOR``
seconds, and the caller claims through its pool meanwhile, whose connections
are open already (and which waits for one of its own when all are busy).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import Select
from sqlalchemy.exc import DBAPIError

from .raw_statements import RawStatement

logger = logging.getLogger("jobstead.store")

#: After a refused connection, how long ``usable`` says no before trying again.
REFUSED_FOR = 5.0

#: How a statement is sent (``raw_statements``).
Render = Callable[[Select[Any]], RawStatement]


class AsyncAlone:
    """``Driver.rows_alone`` for a caller on an event loop (PostgreSQL, psycopg)."""

    def __init__(
        self,
        conninfo: str,
        render: Render,
        *,
        connect_options: dict[str, Any],
        json_loads: Callable[[Any], Any],  # psycopg passes bytes (jsonb text)
        describe: str,
    ) -> None:
        self._conninfo = conninfo
        self._render = render
        self._connect_options = connect_options
        self._json_loads = json_loads
        self._describe = describe
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._refused_until: float | None = None

    async def usable(self) -> bool:
        """Whether the connection is open, or could be opened now; False for a while after a refusal."""
        if self._conn is not None and not self._conn.closed:
            return True
        if self._refused_until is not None and time.monotonic() < self._refused_until:
            return False
        try:
            await self._connect()
        except psycopg.OperationalError as exc:
            if self._refused_until is None:
                logger.warning(
                    "claims go through the connection pool: %s refused a connection of their own (%s)",
                    self._describe,
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
                )
            self._refused_until = time.monotonic() + REFUSED_FOR
            return False
        if self._refused_until is not None:
            logger.info("claims have a connection of their own again (%s)", self._describe)
            self._refused_until = None
        return True

    async def rows(
        self, statement: Select[Any], params: dict[str, Any] | Callable[[], dict[str, Any]]
    ) -> Sequence[Sequence[Any]]:
        """The rows of ``statement``, run as a transaction of its own (see ``Driver.rows_alone``);
        a function for ``params`` is called once the connection is open (``Params``)."""
        raw = self._render(statement)
        try:
            conn = self._conn if self._conn is not None and not self._conn.closed else await self._connect()
            cursor = psycopg.AsyncRawCursor(conn)
            await cursor.execute(raw.sql, raw.values(params() if callable(params) else params))
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
            return rows
        except psycopg.Error as exc:
            await self.close()
            raise DBAPIError.instance(raw.sql, None, exc, psycopg.Error) from exc
        except BaseException:
            await self.close()  # cancelled mid-statement: its state is unknown
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **self._connect_options)
        set_json_loads(self._json_loads, conn)
        if conn.info.parameter_status("TimeZone") != "UTC":  # as the engine's connections (_session_in_utc)
            await conn.execute("SET TIME ZONE 'UTC'")
        self._conn = conn
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing left to release
                await conn.close()

    def __repr__(self) -> str:
        return f"AsyncAlone({self._describe})"
