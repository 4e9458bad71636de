"""Attaching a resource to its app's database: the steps both reconcilers share, and how they fail.

Each step raises ``NotReady`` with the reason and message for the ``Ready``
condition; the reconcilers report it, and their timers reconcile again at the
next tick if the reason heals by itself (``still_attached``). A
resource whose database changed (its Secret was rotated to another URL)
leaves the old one first (its rows there are removed, best effort) and says
so in a ``DatabaseChanged`` Event; every message names a database masked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from .databases import AppDatabase, SchemaMissing
from .reasons import Notice, Reason
from .resources import Resource
from .state import OperatorState
from .targets import DatabaseTarget

logger = logging.getLogger("jobstead.operator")
#: How long leaving an old database may take; one that is down is left without its cleanup.
LEAVE_TIMEOUT_SECONDS = 10.0


class NotReady(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def unavailable(target: DatabaseTarget, exc: BaseException) -> NotReady:
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return NotReady(Reason.DATABASE_UNAVAILABLE, f"cannot reach the database {target.masked}: {target.scrub(text)}")


async def attach(
    state: OperatorState,
    resource: Resource,
    target: DatabaseTarget,
    *,
    leave: Callable[[AppDatabase], Awaitable[None]],
) -> AppDatabase:
    """The resource's database, open, with current tables; ``leave`` cleans up in a database it no longer uses."""
    current = state.databases.of(resource.user)
    if current is not None and current.target != target:
        try:
            await asyncio.wait_for(leave(current), timeout=LEAVE_TIMEOUT_SECONDS)
        except (SQLAlchemyError, TimeoutError) as exc:
            logger.warning(
                "%s %s/%s: left %s without removing its rows there (%s)",
                resource.kind,
                resource.namespace,
                resource.name,
                current.target.masked,
                current.target.scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
            )
    database, previous = await state.databases.use(resource.user, target)
    if previous is not None:
        message = f"now reconciled into {target.masked} (was {previous.masked}): its Secret changed"
        resource.info(Notice.DATABASE_CHANGED, message)
        logger.info("%s %s/%s: %s", resource.kind, resource.namespace, resource.name, message)
    try:
        await state.databases.ready(database)
    except SchemaMissing as exc:
        raise NotReady(Reason.SCHEMA_MISSING, str(exc)) from None
    except SQLAlchemyError as exc:
        raise unavailable(target, exc) from None
    return database


def still_attached(state: OperatorState, resource: Resource, target: DatabaseTarget) -> AppDatabase | None:
    """The resource's database if nothing calls for a reconcile (same target, tables there, last try fine).

    A last try that failed for a reason that heals by itself (``Reason.recoverable``)
    calls for one; any other failure waits for an edit of the resource.
    """
    database = state.databases.of(resource.user)
    ready = resource.ready_condition() or {}
    reason = Reason.known(ready.get("reason"))
    healthy = ready.get("status") == "True" or reason is None or not reason.recoverable
    if database is not None and database.target == target and database.schema_current and healthy:
        return database
    return None
