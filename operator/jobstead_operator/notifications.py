"""LISTEN on one database's wake-up channel, for as long as the database is in use.

The runtime's workers listen the same way; the operator keeps its own copy
because the runtime exports no listener (it lives in the worker's internals).
Purely an accelerator: a lost connection costs latency, never a job, so a
failure is logged (password masked) and retried with a growing pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

from .targets import DatabaseTarget

logger = logging.getLogger("jobstead.operator")
#: What the runtime sends (and what the operator assumes) after anything that may have made work due.
WAKE_ALL = "*"


async def listen(target: DatabaseTarget, channel: str, wake: Callable[[str], None]) -> None:
    """Call ``wake(queue)`` for each NOTIFY on ``channel``, and ``wake(WAKE_ALL)`` after each (re)connect."""
    conninfo = target.url.set(drivername="postgresql").render_as_string(hide_password=False)
    backoff = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                backoff = 0.5
                wake(WAKE_ALL)  # anything deferred while we were not listening
                async for note in conn.notifies():
                    wake(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "%s: LISTEN connection lost (%s); the scale tick covers it, retry in %.1f s",
                target.masked,
                target.scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
