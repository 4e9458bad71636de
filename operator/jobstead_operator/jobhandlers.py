"""JobHandler resources -> a handler row in the app's database and a worker Deployment.

The database is the one the resource's ``spec.database.secretRef`` names:
the same Secret the worker pods get their URL (and schema, table prefix)
from, so the limit, the pause and the queue depth the scaler reads are where
the workers claim.

Level-based: ``reconcile`` makes the database and the Deployment match the
spec (on create, on spec change, and on operator start for every existing
resource); the ``scale`` timer follows the Secret (a rotated URL is followed
at the next tick), observes the queue and writes replicas and status.
Anything that is wrong (a spec only code can reject, a missing Secret, an
unreachable database) becomes ``Ready=False`` with a reason and an Event; it
never stops the operator from serving other resources.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from jobstead.store import HandlerDefinition

from .binding import NotReady, attach, still_attached, unavailable
from .conditions import now_rfc3339
from .databases import AppDatabase
from .deployment import build_deployment, deployment_name
from .metrics import OPERATOR_METRICS
from .pods import rank_for_scale_down
from .reasons import Notice, Reason
from .registry import GROUP, VERSION, registry
from .resources import Resource
from .scaling import Decision, Scaler, rate_per_second
from .spec import JobHandlerSpec, SpecError
from .state import OperatorState
from .targets import TargetError

PLURAL = "jobhandlers"
KIND = "JobHandler"
#: Seconds between scale ticks; new work on PostgreSQL wakes a handler at zero sooner (see ``wakeup``).
SCALE_INTERVAL = float(os.environ.get("JOBSTEAD_SCALE_INTERVAL") or 2.0)


def definition(spec: JobHandlerSpec) -> HandlerDefinition:
    """The handler row a JobHandler owns: the settings every worker must share."""
    return HandlerDefinition(
        name=spec.handler,
        queue=spec.queue,
        priority=0,
        concurrency=spec.concurrency,
        tenant_concurrency=spec.tenant_concurrency,
        max_attempts=spec.max_attempts,
        retry=spec.retry,
        timeout=float(spec.timeout_seconds) if spec.timeout_seconds else None,
        params=(),  # the code knows them; put_handler keeps what it published
        source="crd",
        flow=spec.flow,
    )


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
async def on_change(memo: Any, **kwargs: Any) -> None:
    resource = Resource.of(KIND, kwargs)
    try:
        await reconcile(memo.state, resource, fresh=True)
    except NotReady as exc:
        # Reported; the scale tick reconciles again while the reason is one that heals by itself.
        resource.ready(ok=False, reason=exc.reason, message=exc.message)


async def reconcile(state: OperatorState, resource: Resource, *, fresh: bool) -> AppDatabase:
    """Database rows and Deployment as the spec says; ``NotReady`` says what stands in the way."""
    with OPERATOR_METRICS.reconciling(KIND):
        return await _reconcile(state, resource, fresh=fresh)


async def _reconcile(state: OperatorState, resource: Resource, *, fresh: bool) -> AppDatabase:
    try:
        spec = JobHandlerSpec.parse(resource.spec)
    except SpecError as exc:
        raise NotReady(exc.reason, exc.message) from None
    try:
        target = await state.secrets.target(resource.namespace, spec.database, fresh=fresh)
    except TargetError as exc:
        raise NotReady(exc.reason, exc.message) from None

    async def leave(old: AppDatabase) -> None:
        await _release_rows(old, spec.handler)

    database = await attach(state, resource, target, leave=leave)
    try:
        await _write_rows(database, spec)
    except SQLAlchemyError as exc:
        raise unavailable(target, exc) from None
    await _apply_deployment(state, resource, spec)
    try:
        unknown = await unknown_keys(database, spec)
    except SQLAlchemyError as exc:
        raise unavailable(target, exc) from None
    if unknown is not None:
        # Not Ready, but not stopped either: the workers run (a key that names no argument puts every
        # job in one group), and a new version of the code that has the parameter heals it.
        resource.ready(ok=False, reason=Reason.UNKNOWN_PARAMETER, message=unknown)
        return database
    flow = f", {describe_flow(spec)}" if not spec.flow.is_none else ""
    resource.ready(
        ok=True,
        reason=Reason.RECONCILED,
        message=(
            f"handler {spec.handler!r} in {target.masked}: limit {spec.concurrency}{flow}, "
            f"up to {spec.replica_cap} pod(s)"
        ),
    )
    return database


async def unknown_keys(database: AppDatabase, spec: JobHandlerSpec) -> str | None:
    """Why a ``*By`` field names no parameter the app's workers published for the handler, or None."""
    if not spec.flow_keys:
        return None  # nothing to check: no read
    row = await database.call(database.store.registry.handler, spec.handler)
    return spec.unknown_keys([name for name, _ in row.params] if row is not None else [])


def describe_flow(spec: JobHandlerSpec) -> str:
    """The flow control in a few words, for the Ready message (``rate 100 per 1 s by customer_id, ...``)."""
    flow, parts = spec.flow, []
    if flow.rate_limit is not None:
        by = f" by {flow.rate_limit_by}" if flow.rate_limit_by else ""
        parts.append(f"rate {flow.rate_limit.limit} per {flow.rate_limit.per:g} s{by}")
    if flow.concurrency_by is not None:
        parts.append(f"{flow.concurrency_per_key} per {flow.concurrency_by}")
    if flow.sequence_by is not None:
        goes_on = ", going on after a failure" if flow.sequence_on_failure == "continue" else ""
        parts.append(f"in sequence by {flow.sequence_by}{goes_on}")
    if flow.fair_by is not None:
        parts.append(f"fair by {flow.fair_by}")
    return ", ".join(parts)


async def _write_rows(database: AppDatabase, spec: JobHandlerSpec) -> None:
    store = database.store
    await database.call(store.registry.put_handler, definition(spec))
    if spec.paused:
        await database.call(store.control.pause, "handler", spec.handler)
    else:
        await database.call(store.control.resume, "handler", spec.handler)


async def _release_rows(database: AppDatabase, handler: str) -> None:
    """The handler row goes back to the code's settings; a pause set by the resource ends. Jobs stay."""
    await database.call(database.store.registry.remove_handler, handler, source="crd")
    await database.call(database.store.control.resume, "handler", handler)


async def _apply_deployment(state: OperatorState, resource: Resource, spec: JobHandlerSpec) -> None:
    name, namespace = resource.name, resource.namespace
    existing = await state.kube.get_deployment(namespace, deployment_name(name))
    replicas = existing["spec"]["replicas"] if existing else spec.min_replicas
    desired = build_deployment(
        name,
        namespace,
        spec,
        replicas=max(spec.min_replicas, min(replicas, spec.replica_cap)),
        defaults=state.worker_defaults,
        secret_version=state.secrets.version(namespace, spec.database),
        metrics_port=state.worker_metrics_port,
    )
    kopf.adopt(desired, owner=resource.body)
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
async def scale(memo: Any, **kwargs: Any) -> None:
    """Follow the Secret, size the Deployment to the queue, and report what was observed."""
    state: OperatorState = memo.state
    resource = Resource.of(KIND, kwargs)
    try:
        spec = JobHandlerSpec.parse(resource.spec)
    except SpecError:
        return  # reconcile reported it; nothing to scale
    scaler = state.scaler(resource.namespace, resource.name)
    try:
        database = await _current_database(state, resource, spec)
        try:
            load = await database.call(database.store.queries.handler_load, spec.handler)
            if load.due or load.running:  # an idle handler's cap is moot: no read
                await _read_run_time(database, spec, scaler)
        except SQLAlchemyError as exc:
            raise unavailable(database.target, exc) from None
    except NotReady as exc:
        resource.ready(ok=False, reason=exc.reason, message=exc.message)
        return  # reported; the next tick tries again
    state.handlers[(resource.namespace, resource.name)] = (spec, time.monotonic())
    deployment = await state.kube.get_deployment(resource.namespace, deployment_name(resource.name))
    if deployment is None:
        return  # reconcile creates it
    current = int(deployment["spec"].get("replicas") or 0)
    scaler.remember(resource.status.get("recentDecisions"))
    decision = scaler.decide(
        spec,
        due=load.due,
        running=load.running,
        current=current,
        now=time.monotonic(),
        mean_run_seconds=scaler.mean_run_seconds,
    )
    desired = decision.desired
    if decision.changes:
        if desired < current:
            await rank_for_scale_down(state, database, resource.namespace, resource.name)  # idle pods go first
        await state.kube.patch_deployment(
            resource.namespace, deployment_name(resource.name), {"spec": {"replicas": desired}}
        )
        change = scaler.record(decision, now_rfc3339())
        resource.patch.status["lastScaleTime"] = change.time
        resource.info(Notice.SCALED, f"{current} -> {desired} worker pod(s): {decision.reason}")
    OPERATOR_METRICS.scaled(resource.namespace, resource.name, current, desired)
    status = resource.patch.status
    status["scaling"] = scaling_status(decision)
    status["recentDecisions"] = [change.as_status() for change in scaler.recent]
    status["replicas"] = desired
    status["readyReplicas"] = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    status["queued"] = load.due
    status["running"] = load.running
    status["failed"] = load.failed


async def _read_run_time(database: AppDatabase, spec: JobHandlerSpec, scaler: Scaler) -> None:
    """A rate-limited handler's recent mean run time, which caps its replicas; no read for any other handler."""
    now = time.monotonic()
    if rate_per_second(spec) is None or not scaler.wants_run_time(now):
        return
    run = await database.call(database.store.queries.recent_run_time, spec.handler)
    scaler.take_run_time(run.mean_seconds, finished=run.finished, now=now)


def scaling_status(decision: Decision) -> dict[str, Any]:
    """``status.scaling``: the last tick's decision, its inputs and its reason.

    Absent values are None, not left out: the status is a merge patch, which would keep a stale key.
    """
    until = None
    if decision.cooldown_left is not None:
        until = (datetime.now(UTC) + timedelta(seconds=decision.cooldown_left)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "desiredReplicas": decision.desired,
        "currentReplicas": decision.current,
        "due": decision.due,
        "running": decision.running,
        "neededReplicas": decision.needed,
        "perPodConcurrency": decision.per_pod_concurrency,
        "concurrency": decision.concurrency,
        "limitCap": decision.limit_cap,
        "minReplicas": decision.min_replicas,
        "maxReplicas": decision.max_replicas,
        "rateCap": decision.rate_cap,
        "ratePerSecond": decision.rate_per_second,
        "meanRunSeconds": decision.mean_run_seconds,
        "limitedBy": decision.limited_by.value if decision.limited_by else None,
        "coolDownUntil": until,
        "reason": decision.reason,
    }


async def _current_database(state: OperatorState, resource: Resource, spec: JobHandlerSpec) -> AppDatabase:
    """The database to scale from: reconciled again first if the Secret moved or the last try failed."""
    try:
        target = await state.secrets.target(resource.namespace, spec.database)
    except TargetError as exc:
        raise NotReady(exc.reason, exc.message) from None
    return still_attached(state, resource, target) or await reconcile(state, resource, fresh=False)


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
async def release(memo: Any, logger: Any, **kwargs: Any) -> None:
    """The Deployment goes with its owner (garbage collection); jobs stay; the handler row returns to code."""
    state: OperatorState = memo.state
    resource = Resource.of(KIND, kwargs)
    state.handlers.pop((resource.namespace, resource.name), None)
    state.scalers.pop((resource.namespace, resource.name), None)
    OPERATOR_METRICS.forget(resource.namespace, resource.name)
    handler = resource.spec.get("handler")
    database = state.databases.of(resource.user)
    if database is None and handler:
        try:  # the operator restarted since: find the database again
            spec = JobHandlerSpec.parse(resource.spec)
            target = await state.secrets.target(resource.namespace, spec.database, fresh=True)
            database, _ = await state.databases.use(resource.user, target)
        except (SpecError, TargetError) as exc:
            logger.info("handler %s: its database is unknown (%s); nothing to release there", handler, exc)
    if database is not None and handler:
        try:
            await _release_rows(database, handler)
        except SQLAlchemyError as exc:
            problem = unavailable(database.target, exc)
            raise kopf.TemporaryError(problem.message, delay=5) from None
        logger.info("handler %s released in %s; its jobs are kept", handler, database.target.masked)
    await state.databases.release(resource.user)
