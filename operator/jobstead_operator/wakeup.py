"""New work wakes a handler at zero replicas at once, instead of at the next scale tick.

On PostgreSQL every deferred job sends a NOTIFY with its queue (the same one
workers listen to). The operator listens too, and for each JobHandler of that
queue that has no pod, asks the scaler right away: the first job of a burst
after an idle period does not wait out the tick. Scaling between non-zero
sizes, and status, stay with the timer; on SQLite the timer does it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from jobstead.store import WAKE_ALL

from .deployment import deployment_name
from .jobhandlers import SCALE_INTERVAL
from .registry import registry
from .state import OperatorState

logger = logging.getLogger("jobstead.operator")


async def wake_from_zero(state: OperatorState, queue: str) -> None:
    fresh_after = time.monotonic() - 3 * SCALE_INTERVAL
    for (namespace, name), (spec, ticked_at) in list(state.handlers.items()):
        if queue not in (spec.queue, WAKE_ALL) or ticked_at < fresh_after:
            continue
        deployment = await state.kube.get_deployment(namespace, deployment_name(name))
        if deployment is None or int(deployment["spec"].get("replicas") or 0) > 0:
            continue
        load = await asyncio.to_thread(state.store.queries.handler_load, spec.handler)
        desired = state.scaler(namespace, name).decide(
            spec, due=load.due, running=load.running, current=0, now=time.monotonic()
        )
        if desired > 0:
            await state.kube.patch_deployment(namespace, deployment_name(name), {"spec": {"replicas": desired}})
            logger.info("%s/%s: new work in queue %s: 0 -> %d worker pod(s)", namespace, name, queue, desired)


@kopf.on.startup(registry=registry)
async def start_listening(memo: Any, **_: Any) -> None:
    state: OperatorState = memo.state
    if not state.store.supports_listen:
        return
    pending: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()  # held, so a running wake-up is never garbage-collected
    loop = asyncio.get_running_loop()

    async def handle(queue: str) -> None:
        try:
            await wake_from_zero(state, queue)
        except Exception:
            logger.exception("waking handlers of queue %s failed; the scale tick will do it", queue)
        finally:
            pending.discard(queue)

    def on_notify(queue: str) -> None:
        if queue not in pending:  # a burst of defers causes one wake-up per queue, not one per job
            pending.add(queue)
            task = loop.create_task(handle(queue))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    memo.listener = loop.create_task(state.store.listen(None, on_notify))


@kopf.on.cleanup(registry=registry)
async def stop_listening(memo: Any, **_: Any) -> None:
    task = getattr(memo, "listener", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
