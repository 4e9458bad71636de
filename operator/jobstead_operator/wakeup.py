"""New work wakes a handler at zero replicas at once, instead of at the next scale tick.

On PostgreSQL every deferred job sends a NOTIFY with its queue (the same one
workers listen to). The operator listens too, once per app database (see
``databases``), and for each JobHandler of that database and queue that has
no pod, asks the scaler right away: the first job of a burst after an idle
period does not wait out the tick. Scaling between non-zero sizes, and
status, stay with the timer; on SQLite the timer does it all.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from jobstead.store import WAKE_ALL

from .conditions import now_rfc3339
from .databases import AppDatabase
from .deployment import deployment_name
from .jobhandlers import KIND, SCALE_INTERVAL
from .metrics import OPERATOR_METRICS
from .state import OperatorState

logger = logging.getLogger("jobstead.operator")


async def wake_from_zero(state: OperatorState, database: AppDatabase, queue: str) -> None:
    fresh_after = time.monotonic() - 3 * SCALE_INTERVAL
    for (namespace, name), (spec, ticked_at) in list(state.handlers.items()):
        if queue not in (spec.queue, WAKE_ALL) or ticked_at < fresh_after:
            continue
        if state.databases.of((KIND, namespace, name)) is not database:
            continue  # another app's handler of the same queue name
        deployment = await state.kube.get_deployment(namespace, deployment_name(name))
        if deployment is None or int(deployment["spec"].get("replicas") or 0) > 0:
            continue
        try:
            load = await database.call(database.store.queries.handler_load, spec.handler)
        except SQLAlchemyError:
            continue  # the scale tick reports it
        scaler = state.scaler(namespace, name)
        decision = scaler.decide(
            spec,
            due=load.due,
            running=load.running,
            current=0,
            now=time.monotonic(),
            mean_run_seconds=scaler.mean_run_seconds,  # the last measure: a rate's cap holds from zero too
        )
        desired = decision.desired
        if desired > 0:
            await state.kube.patch_deployment(namespace, deployment_name(name), {"spec": {"replicas": desired}})
            scaler.record(decision, now_rfc3339(), note=" (woken by new work)")  # the tick writes it
            OPERATOR_METRICS.scaled(namespace, name, 0, desired)
            logger.info("%s/%s: new work in queue %s: 0 -> %d worker pod(s)", namespace, name, queue, desired)


class Waker:
    """The pool's NOTIFY callback: one wake-up per (database, queue) in flight, not one per job of a burst."""

    def __init__(self, state: OperatorState | None = None) -> None:
        self.state = state
        self._pending: set[tuple[int, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # held, so a running wake-up is never garbage-collected

    def __call__(self, database: AppDatabase, queue: str) -> None:
        key = (id(database), queue)
        if self.state is None or key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._wake(self.state, database, queue, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wake(self, state: OperatorState, database: AppDatabase, queue: str, key: tuple[int, str]) -> None:
        try:
            await wake_from_zero(state, database, queue)
        except Exception:
            logger.exception("waking handlers of queue %s failed; the scale tick will do it", queue)
        finally:
            self._pending.discard(key)
