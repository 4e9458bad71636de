"""JobHandler resources -> a handler row in the database and a worker Deployment.

Level-based: ``reconcile`` makes the database and the Deployment match the
spec (on create, on spec change, and on operator start for every existing
resource); the ``scale`` timer observes the queue and writes replicas and
status. Anything that is wrong (a spec only code can reject, a missing Secret,
an unreachable database) becomes ``Ready=False`` with a reason and an Event;
it never stops the operator from serving other resources.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from jobstead.store import HandlerDefinition

from .conditions import is_ready, now_rfc3339, set_condition
from .deployment import build_deployment, deployment_name
from .pods import rank_for_scale_down
from .registry import GROUP, VERSION, registry
from .spec import JobHandlerSpec, SpecError
from .state import OperatorState

PLURAL = "jobhandlers"
#: Seconds between scale ticks; new work on PostgreSQL wakes a handler at zero sooner (see ``wakeup``).
SCALE_INTERVAL = float(os.environ.get("JOBSTEAD_SCALE_INTERVAL") or 2.0)


def definition(spec: JobHandlerSpec) -> HandlerDefinition:
    """The handler row a JobHandler owns: the settings every worker must share."""
    return HandlerDefinition(
        name=spec.handler,
        queue=spec.queue,
        priority=0,
        concurrency=spec.concurrency,
        max_attempts=spec.max_attempts,
        retry=spec.retry,
        timeout=float(spec.timeout_seconds) if spec.timeout_seconds else None,
        params=(),  # the code knows them; put_handler keeps what it published
        source="crd",
    )


def _not_ready(patch: kopf.Patch, status: Any, meta: Any, body: Any, reason: str, message: str) -> None:
    patch.status["conditions"] = set_condition(
        (status or {}).get("conditions"),
        type="Ready",
        ok=False,
        reason=reason,
        message=message,
        generation=meta.get("generation"),
    )
    kopf.warn(body, reason=reason, message=message)


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
async def on_change(
    spec: Any,
    status: Any,
    meta: Any,
    name: str,
    namespace: str | None,
    body: Any,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    assert namespace is not None  # the CRD is namespaced
    await reconcile(memo.state, spec, status, meta, name, namespace, body, patch)


async def reconcile(
    state: OperatorState, spec: Any, status: Any, meta: Any, name: str, namespace: str, body: Any, patch: kopf.Patch
) -> None:
    try:
        parsed = JobHandlerSpec.parse(spec)
    except SpecError as exc:
        _not_ready(patch, status, meta, body, exc.reason, exc.message)
        return
    has_key = await state.kube.secret_has_key(namespace, parsed.database.name, parsed.database.key)
    if not has_key:
        what = "does not exist" if has_key is None else f"has no key {parsed.database.key!r}"
        _not_ready(
            patch,
            status,
            meta,
            body,
            "SecretNotFound",
            f"spec.database.secretRef: Secret {parsed.database.name!r} {what}",
        )
        raise kopf.TemporaryError("waiting for the database Secret", delay=15)
    try:
        await _write_database(state, parsed)
    except SQLAlchemyError as exc:
        _not_ready(patch, status, meta, body, "DatabaseUnavailable", f"cannot reach the database: {_short(exc)}")
        raise kopf.TemporaryError("database unavailable", delay=5) from exc
    await _apply_deployment(state, name, namespace, body, parsed)
    patch.status["observedGeneration"] = meta.get("generation")
    patch.status["conditions"] = set_condition(
        (status or {}).get("conditions"),
        type="Ready",
        ok=True,
        reason="Reconciled",
        message=f"handler {parsed.handler!r}: limit {parsed.concurrency}, up to {parsed.replica_cap} pod(s)",
        generation=meta.get("generation"),
    )


async def _write_database(state: OperatorState, spec: JobHandlerSpec) -> None:
    store = state.store
    await asyncio.to_thread(state.ensure_schema)
    await asyncio.to_thread(store.registry.put_handler, definition(spec))
    if spec.paused:
        await asyncio.to_thread(store.control.pause, "handler", spec.handler)
    else:
        await asyncio.to_thread(store.control.resume, "handler", spec.handler)


async def _apply_deployment(state: OperatorState, name: str, namespace: str, body: Any, spec: JobHandlerSpec) -> None:
    existing = await state.kube.get_deployment(namespace, deployment_name(name))
    replicas = existing["spec"]["replicas"] if existing else spec.min_replicas
    desired = build_deployment(
        name,
        namespace,
        spec,
        replicas=max(spec.min_replicas, min(replicas, spec.replica_cap)),
        defaults=state.worker_defaults,
    )
    kopf.adopt(desired, owner=body)
    if existing is None and await state.kube.create_deployment(namespace, desired):
        return
    await state.kube.patch_deployment(namespace, deployment_name(name), desired)


# A failing tick (API hiccup, conflict) is retried at the next interval, not after kopf's 60 s default.
@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=SCALE_INTERVAL,
    errors=kopf.ErrorsMode.TEMPORARY,
    backoff=SCALE_INTERVAL,
    registry=registry,
)
async def scale(
    spec: Any,
    status: Any,
    meta: Any,
    name: str,
    namespace: str | None,
    body: Any,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    """Size the Deployment to the queue, and report what was observed."""
    assert namespace is not None
    state: OperatorState = memo.state
    try:
        parsed = JobHandlerSpec.parse(spec)
    except SpecError:
        return  # reconcile reported it; nothing to scale
    ready, reason = is_ready(status)
    if not ready and reason in ("DatabaseUnavailable", "SecretNotFound"):
        try:
            await reconcile(state, spec, status, meta, name, namespace, body, patch)
        except kopf.TemporaryError:
            return  # still not ready: reported in the condition; the next tick tries again
        status = {**(status or {}), **patch.status}
    try:
        await asyncio.to_thread(state.ensure_schema)
        load = await asyncio.to_thread(state.store.queries.handler_load, parsed.handler)
    except SQLAlchemyError as exc:
        _not_ready(patch, status, meta, body, "DatabaseUnavailable", f"cannot reach the database: {_short(exc)}")
        return
    state.handlers[(namespace, name)] = (parsed, time.monotonic())
    deployment = await state.kube.get_deployment(namespace, deployment_name(name))
    if deployment is None:
        return  # reconcile creates it
    current = int(deployment["spec"].get("replicas") or 0)
    desired = state.scaler(namespace, name).decide(
        parsed, due=load.due, running=load.running, current=current, now=time.monotonic()
    )
    if desired != current:
        if desired < current:
            await rank_for_scale_down(state, namespace, name)  # idle pods go first
        await state.kube.patch_deployment(namespace, deployment_name(name), {"spec": {"replicas": desired}})
        patch.status["lastScaleTime"] = now_rfc3339()
        kopf.info(
            body,
            reason="Scaled",
            message=f"{current} -> {desired} worker pod(s): {load.due} due, {load.running} running",
        )
    patch.status["replicas"] = desired
    patch.status["readyReplicas"] = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    patch.status["queued"] = load.due
    patch.status["running"] = load.running
    patch.status["failed"] = load.failed


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
async def release(spec: Any, memo: Any, logger: Any, **_: Any) -> None:
    """The Deployment goes with its owner (garbage collection); jobs stay; the handler row returns to code."""
    state: OperatorState = memo.state
    state.handlers = {key: v for key, v in state.handlers.items() if v[0].handler != spec.get("handler")}
    handler = spec.get("handler")
    if not handler:
        return
    try:
        await asyncio.to_thread(state.store.registry.remove_handler, handler, source="crd")
        await asyncio.to_thread(state.store.control.resume, "handler", handler)
    except SQLAlchemyError as exc:
        raise kopf.TemporaryError(f"database unavailable: {_short(exc)}", delay=5) from exc
    logger.info("handler %s released; its jobs are kept", handler)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300]
