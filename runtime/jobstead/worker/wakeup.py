"""LISTEN/NOTIFY wake-up on PostgreSQL: a deferred job starts within milliseconds.

Purely an accelerator: the worker also polls, so a lost notification, a
restarted database or a PgBouncer in transaction mode (which breaks LISTEN)
costs latency, never a job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from ..store.control import WAKE_ALL

logger = logging.getLogger("jobstead.worker")


def libpq_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    url: URL,
    channel: str,
    queues: Collection[str] | None,
    wake: Callable[[str], None],
    *,
    connected: Callable[[], None] = lambda: None,
) -> None:
    """Call ``wake(queue)`` for each notification about one of ``queues`` (all when None), forever.

    ``queue`` is ``WAKE_ALL`` after (re)connecting and on resume: anything may be waiting.
    """
    backoff = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(libpq_conninfo(url), autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                backoff = 0.5
                connected()
                wake(WAKE_ALL)  # anything deferred while we were not listening
                async for note in conn.notifies():
                    if queues is None or note.payload in queues or note.payload == WAKE_ALL:
                        wake(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "LISTEN connection lost (%s); polling until it is back, retry in %.1f s",
                exc,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
