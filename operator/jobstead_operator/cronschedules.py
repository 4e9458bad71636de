"""CronSchedule resources -> cron rows (source ``crd``) in the app's database.

Which database: the resource's own ``spec.database.secretRef`` when it has
one; else the one of the JobHandler for the same handler in its namespace;
else the operator's default (``$JOBSTEAD_DATABASE_URL``), if it has one;
else ``Ready=False`` reason ``DatabaseUnknown``. The choice is made again at
every status tick, so a JobHandler applied later, or a rotated Secret, is
followed without an edit.

The resource's name is the cron's name. ``suspend`` disables the row; a
finalizer removes it when the resource is deleted, and only a row this
operator wrote (source ``crd``): a code or hand-made cron of the same name is
never touched. What only code can check (a cron expression croniter rejects,
an unknown IANA zone) becomes ``Ready=False`` with the field in the message,
and an Event. A cron whose handler the database does not know (no app has
published it, no JobHandler names it) is stored but cannot fire: ``Ready=False``
reason ``HandlerUnknown`` until the handler appears, when the scheduler starts
firing it. The ``report`` timer mirrors the schedulers' progress: last and
next fire, last job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from .binding import NotReady, attach, still_attached, unavailable
from .databases import AppDatabase
from .metrics import OPERATOR_METRICS
from .reasons import Reason
from .registry import GROUP, VERSION, registry
from .resources import Resource
from .spec import CronScheduleSpec, SecretRef, SpecError
from .state import OperatorState
from .targets import DatabaseTarget, TargetError

PLURAL = "cronschedules"
KIND = "CronSchedule"
STATUS_INTERVAL = 2.0
#: kopf passes the index below to every handler under its function's name.
INDEX = "jobhandler_databases"


@kopf.index(GROUP, VERSION, "jobhandlers", registry=registry)
def jobhandler_databases(namespace: str | None, spec: Any, **_: Any) -> dict[tuple[str | None, str], SecretRef]:
    """(namespace, handler) -> the JobHandler's Secret: where a CronSchedule without one of its own goes."""
    try:
        return {(namespace, str(spec["handler"])): SecretRef.parse(spec["database"])}
    except (KeyError, TypeError):
        return {}


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
async def on_change(memo: Any, **kwargs: Any) -> None:
    resource = Resource.of(KIND, kwargs)
    try:
        await reconcile(memo.state, resource, kwargs[INDEX], fresh=True)
    except NotReady as exc:
        # Reported; the status tick reconciles again while the reason is one that heals by itself.
        resource.ready(ok=False, reason=exc.reason, message=exc.message)


async def resolve(
    state: OperatorState,
    resource: Resource,
    spec: CronScheduleSpec,
    jobhandlers: kopf.Index[Any, SecretRef],
    *,
    fresh: bool = False,
) -> DatabaseTarget:
    """Own Secret, else the JobHandler's of the same handler, else the operator's default."""
    ref = spec.database
    if ref is None:
        refs = list(jobhandlers.get((resource.namespace, spec.handler), []))
        ref = refs[0] if refs else None
    if ref is None:
        if state.default_target is not None:
            return state.default_target
        raise NotReady(
            Reason.DATABASE_UNKNOWN,
            f"no database for handler {spec.handler!r}: the resource has no spec.database.secretRef, no "
            f"JobHandler in namespace {resource.namespace!r} runs that handler, and the operator has no "
            "default database; name the app's database Secret in spec.database.secretRef",
        )
    try:
        return await state.secrets.target(resource.namespace, ref, fresh=fresh)
    except TargetError as exc:
        raise NotReady(exc.reason, exc.message) from None


async def reconcile(
    state: OperatorState, resource: Resource, jobhandlers: kopf.Index[Any, SecretRef], *, fresh: bool
) -> AppDatabase:
    """The cron row as the spec says, in the database it resolves to; ``NotReady`` says what stands in the way."""
    with OPERATOR_METRICS.reconciling(KIND):
        return await _reconcile(state, resource, jobhandlers, fresh=fresh)


async def _reconcile(
    state: OperatorState, resource: Resource, jobhandlers: kopf.Index[Any, SecretRef], *, fresh: bool
) -> AppDatabase:
    try:
        spec = CronScheduleSpec.parse(resource.name, resource.spec)
    except SpecError as exc:
        raise NotReady(exc.reason, exc.message) from None
    target = await resolve(state, resource, spec, jobhandlers, fresh=fresh)

    async def leave(old: AppDatabase) -> None:
        await old.call(old.store.crons.remove, resource.name, source="crd")

    database = await attach(state, resource, target, leave=leave)
    crons, cron = database.store.crons, spec.cron
    try:
        existing = await database.call(crons.get, resource.name)
        if existing is not None and existing.source != "crd":
            raise NotReady(
                Reason.NAME_TAKEN,
                f"a {existing.source}-defined cron named {resource.name!r} exists in {target.masked}; "
                "this resource leaves it alone",
            )
        await database.call(crons.put, cron)
        known = await database.call(database.store.registry.handler, cron.handler)
    except SQLAlchemyError as exc:
        raise unavailable(target, exc) from None
    if known is None:
        raise _handler_unknown(cron.handler, database)
    what = "suspended" if not cron.enabled else f"{cron.schedule} ({cron.timezone})"
    resource.ready(
        ok=True, reason=Reason.RECONCILED, message=f"cron {resource.name} in {target.masked}: {what} -> {cron.handler}"
    )
    return database


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=STATUS_INTERVAL,
    errors=kopf.ErrorsMode.TEMPORARY,
    backoff=STATUS_INTERVAL,
    registry=registry,
)
async def report(memo: Any, **kwargs: Any) -> None:
    """Follow the database (it may have changed), then mirror last and next fire and the last job."""
    state: OperatorState = memo.state
    resource = Resource.of(KIND, kwargs)
    try:
        spec = CronScheduleSpec.parse(resource.name, resource.spec)
    except SpecError:
        return  # reported when it was applied
    try:
        database = await _current_database(state, resource, spec, kwargs[INDEX])
        try:
            cron = await database.call(database.store.crons.get, resource.name)
            known = await database.call(database.store.registry.handler, spec.handler)
        except SQLAlchemyError as exc:
            raise unavailable(database.target, exc) from None
        if known is None:  # its JobHandler went, and no app publishes the handler: it stopped firing
            raise _handler_unknown(spec.handler, database)
    except NotReady as exc:
        ready = resource.ready_condition() or {}
        unchanged = (ready.get("reason"), ready.get("message")) == (exc.reason, exc.message)
        if not (unchanged and exc.reason is Reason.HANDLER_UNKNOWN):  # waiting for a handler: one Event, not one a tick
            resource.ready(ok=False, reason=exc.reason, message=exc.message)
        return
    if cron is None or cron.source != "crd":
        return
    values = {
        "lastScheduleTime": _rfc3339(cron.last_fire_at),
        "nextScheduleTime": _rfc3339(cron.next_fire_at) if cron.enabled else None,
        "lastJobId": str(cron.last_job_id) if cron.last_job_id is not None else None,
    }
    for key, value in values.items():
        if resource.status.get(key) != value:
            resource.patch.status[key] = value


async def _current_database(
    state: OperatorState, resource: Resource, spec: CronScheduleSpec, jobhandlers: kopf.Index[Any, SecretRef]
) -> AppDatabase:
    target = await resolve(state, resource, spec, jobhandlers)
    return still_attached(state, resource, target) or await reconcile(state, resource, jobhandlers, fresh=False)


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
async def on_delete(memo: Any, logger: Any, **kwargs: Any) -> None:
    """Remove the cron this resource created; its jobs, and crons of other sources, stay."""
    state: OperatorState = memo.state
    resource = Resource.of(KIND, kwargs)
    database = state.databases.of(resource.user)
    if database is None:
        try:  # the operator restarted since: find the database again
            spec = CronScheduleSpec.parse(resource.name, resource.spec)
            target = await resolve(state, resource, spec, kwargs[INDEX], fresh=True)
            database, _ = await state.databases.use(resource.user, target)
        except (SpecError, NotReady) as exc:
            logger.info("cron %s: its database is unknown (%s); nothing to remove", resource.name, exc)
    if database is not None:
        try:
            removed = await database.call(database.store.crons.remove, resource.name, source="crd")
        except SQLAlchemyError as exc:
            raise kopf.TemporaryError(unavailable(database.target, exc).message, delay=5) from None
        outcome = "removed" if removed else "was not ours (or already gone); left alone"
        logger.info("cron %s in %s %s", resource.name, database.target.masked, outcome)
    await state.databases.release(resource.user)


def _handler_unknown(handler: str, database: AppDatabase) -> NotReady:
    return NotReady(
        Reason.HANDLER_UNKNOWN,
        f"handler {handler!r} is unknown in {database.target.masked}: no worker of an app defining it has "
        "started and no JobHandler names it; the cron is stored and fires once the handler appears",
    )


def _rfc3339(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
