"""Following the primary when it changes: PostgreSQL errors that mean "this server no longer takes writes".

In production the primary changes under running processes: a planned
switchover, an unplanned failover (Patroni, CloudNativePG, RDS, Aurora). The
connections a process holds then end up on a server that is gone (shut down:
``AdminShutdown``, a cut connection), still in recovery (a standby: every
write fails with ``cannot execute ... in a read-only transaction``), or
turned read-only under them (Aurora's writer turned reader). A pool that keeps
such connections fails every write for as long as the process lives: the
classic job-queue failure after a failover.

So any of those errors, on any connection, discards the whole pool (the other
connections went to the same server), and the next connections are opened
afresh: with a multi-host URL and ``target_session_attrs=read-write`` libpq
picks whichever host takes writes now; with a single endpoint (CloudNativePG's
``-rw`` Service, an RDS or Aurora writer endpoint) it follows the endpoint.
Until one does, connecting fails and every loop retries with its backoff.
Each process says it once, in one line, per failover.

Whoever must act at once when connections are lost subscribes with
``when_connections_lost``: a worker renews its leases right away, so a run
whose claim the new primary never received (asynchronous replication) stops
as soon as the new primary can say so, rather than at the next heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

logger = logging.getLogger("jobstead.store")

#: Errors of a server that does not take writes now, whatever the statement.
FAILOVER_ERRORS: tuple[type[psycopg.Error], ...] = (
    pgerrors.ReadOnlySqlTransaction,  # a standby, or default_transaction_read_only turned on
    pgerrors.AdminShutdown,  # shut down (fast/smart), or terminated by a failover manager
    pgerrors.CrashShutdown,  # the postmaster died
    pgerrors.CannotConnectNow,  # starting up, or in recovery
)
#: At most one failover line per process in this many seconds (one failover, many connections).
SAY_EVERY_SECONDS = 30.0
#: What the LISTEN connection asks now and then: has its server stopped taking writes?
READ_ONLY_NOW = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"

_said_at = float("-inf")
_said_lock = threading.Lock()
#: Called (on the thread that saw it) whenever connections were found lost (``when_connections_lost``).
_lost_listeners: list[Callable[[], None]] = []


def when_connections_lost(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` whenever a connection of this process is found cut or on a server that stopped
    taking writes; returns the function that unsubscribes it. The callback must be quick and must not raise."""
    _lost_listeners.append(callback)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            _lost_listeners.remove(callback)

    return unsubscribe


def connections_lost() -> None:
    """Tell every subscriber (a failing one is skipped: its process logs its own failures)."""
    for callback in list(_lost_listeners):
        with contextlib.suppress(Exception):
            callback()


def is_failover(exc: BaseException) -> bool:
    """Whether ``exc`` (a DBAPI error, or SQLAlchemy's wrapper of one) says the server no longer takes writes."""
    return isinstance(getattr(exc, "orig", None) or exc, FAILOVER_ERRORS)


def say_failover(where: str, exc: BaseException) -> None:
    """One warning line per failover, whichever connection of the process saw it first."""
    global _said_at
    with _said_lock:
        now = time.monotonic()
        if now - _said_at < SAY_EVERY_SECONDS:
            return
        _said_at = now
    orig = getattr(exc, "orig", None) or exc
    reason = "it is read-only" if isinstance(orig, pgerrors.ReadOnlySqlTransaction) else "it shut down"
    logger.warning(
        "the database server %s stopped taking writes (%s: a failover?); dropping every pooled connection "
        "and reconnecting to whichever host is the primary now",
        where,
        reason,
    )


def server_of(dbapi_connection: Any) -> str:
    """``host:port`` of the server a psycopg connection was talking to ('' if unknown)."""
    try:
        info = dbapi_connection.info
        return f"{info.host}:{info.port}"
    except Exception:  # closed, broken: its details may be gone with it
        return ""


def follow_primary(engine: Engine, describe: str) -> None:
    """Make any failover error on ``engine``'s connections discard its whole pool, and say so once."""

    def on_error(context: ExceptionContext) -> None:
        if context.original_exception is not None and is_failover(context.original_exception):
            # A disconnect to SQLAlchemy: this connection is invalidated, and every other
            # connection the pool holds is replaced at its next checkout.
            context.is_disconnect = True
            raw = context.connection.connection.driver_connection if context.connection is not None else None
            say_failover(server_of(raw) or describe, context.original_exception)
        if context.is_disconnect:
            connections_lost()

    event.listen(engine, "handle_error", on_error)


def discard_pool(engine: Engine, pooled: Any, exc: BaseException, describe: str) -> None:
    """For connections used outside SQLAlchemy's execution (``rows_alone``): as ``follow_primary`` does."""
    say_failover(server_of(pooled.driver_connection) or describe, exc)
    engine.pool._invalidate(pooled, exc)  # what SQLAlchemy does on a disconnect: the whole pool, once
    connections_lost()


async def turned_read_only(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn``'s server stopped taking writes (a standby now, or turned read-only)."""
    cursor = await conn.execute(READ_ONLY_NOW)
    row = await cursor.fetchone()
    return bool(row and row[0])
