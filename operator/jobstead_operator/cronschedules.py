"""CronSchedule resources -> cron rows (source ``crd``) in the database.

The resource's name is the cron's name. ``suspend`` disables the row; a
finalizer removes it when the resource is deleted, and only a row this
operator wrote (source ``crd``): a code or hand-made cron of the same name is
never touched. What only code can check (a cron expression croniter rejects,
an unknown IANA zone) becomes ``Ready=False`` with the field in the message,
and an Event. The ``status`` timer mirrors the schedulers' progress: last and
next fire, last job.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from jobstead.errors import ConfigurationError
from jobstead.store.records import CronDefinition

from .conditions import set_condition
from .registry import GROUP, VERSION, registry
from .state import OperatorState

PLURAL = "cronschedules"
STATUS_INTERVAL = 2.0
POLICIES = {"Allow": "allow", "Forbid": "skip", "Replace": "replace"}


def definition(name: str, spec: Any) -> CronDefinition:
    """The cron row a CronSchedule owns; raises ``ConfigurationError`` naming the bad field."""
    policy = spec.get("concurrencyPolicy", "Allow")
    if policy not in POLICIES:
        raise ConfigurationError(f"spec.concurrencyPolicy must be Allow, Forbid or Replace, not {policy!r}")
    deadline = spec.get("startingDeadlineSeconds")
    d = CronDefinition(
        name=name,
        schedule=str(spec.get("schedule", "")),
        handler=str(spec.get("handler", "")),
        timezone=str(spec.get("timeZone") or "UTC"),
        args=dict(spec.get("args") or {}),
        queue=spec.get("queue"),
        priority=spec.get("priority"),
        tenant=spec.get("tenant"),
        enabled=not spec.get("suspend", False),
        overlap=POLICIES[policy],  # type: ignore[arg-type]
        starting_deadline=float(deadline) if deadline is not None else None,
        source="crd",
    )
    try:
        d.check()
    except ConfigurationError as exc:
        message = str(exc)
        field = "spec.timeZone" if "zone" in message.lower() else "spec.schedule"
        raise ConfigurationError(f"{field}: {message}") from None
    return d


def _ready(patch: kopf.Patch, status: Any, meta: Any, ok: bool, reason: str, message: str) -> None:
    patch.status["observedGeneration"] = meta.get("generation")
    patch.status["conditions"] = set_condition(
        (status or {}).get("conditions"),
        type="Ready",
        ok=ok,
        reason=reason,
        message=message,
        generation=meta.get("generation"),
    )


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
async def on_change(
    spec: Any, status: Any, meta: Any, name: str, body: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    await reconcile(memo.state, name, spec, status, meta, body, patch)


async def reconcile(
    state: OperatorState, name: str, spec: Any, status: Any, meta: Any, body: Any, patch: kopf.Patch
) -> None:
    try:
        cron = definition(name, spec)
    except ConfigurationError as exc:
        reason = "InvalidTimeZone" if str(exc).startswith("spec.timeZone") else "InvalidSchedule"
        _ready(patch, status, meta, False, reason, str(exc))
        kopf.warn(body, reason=reason, message=str(exc))
        return
    try:
        await asyncio.to_thread(state.ensure_schema)
        existing = await asyncio.to_thread(state.store.crons.get, name)
        if existing is not None and existing.source != "crd":
            message = f"a {existing.source}-defined cron named {name!r} exists; this resource leaves it alone"
            _ready(patch, status, meta, False, "NameTaken", message)
            kopf.warn(body, reason="NameTaken", message=message)
            return
        await asyncio.to_thread(state.store.crons.put, cron)
    except SQLAlchemyError as exc:
        message = f"cannot reach the database: {str(exc).splitlines()[0][:300]}"
        _ready(patch, status, meta, False, "DatabaseUnavailable", message)
        kopf.warn(body, reason="DatabaseUnavailable", message=message)
        raise kopf.TemporaryError("database unavailable", delay=5) from exc
    what = "suspended" if not cron.enabled else f"{cron.schedule} ({cron.timezone})"
    _ready(patch, status, meta, True, "Reconciled", f"cron {name}: {what} -> {cron.handler}")


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=STATUS_INTERVAL,
    errors=kopf.ErrorsMode.TEMPORARY,
    backoff=STATUS_INTERVAL,
    registry=registry,
)
async def report(
    spec: Any, status: Any, meta: Any, name: str, body: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Last and next fire and the last job, as the schedulers left them in the database."""
    state: OperatorState = memo.state
    conditions = (status or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("reason") == "DatabaseUnavailable":
        try:  # the database is back? then the row gets written now, not at the next edit
            await reconcile(state, name, spec, status, meta, body, patch)
        except kopf.TemporaryError:
            return
    try:
        cron = await asyncio.to_thread(state.store.crons.get, name)
    except SQLAlchemyError:
        return
    if cron is None or cron.source != "crd":
        return
    values = {
        "lastScheduleTime": _rfc3339(cron.last_fire_at),
        "nextScheduleTime": _rfc3339(cron.next_fire_at) if cron.enabled else None,
        "lastJobId": str(cron.last_job_id) if cron.last_job_id is not None else None,
    }
    for key, value in values.items():
        if (status or {}).get(key) != value:
            patch.status[key] = value


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
async def on_delete(name: str, memo: Any, logger: Any, **_: Any) -> None:
    """Remove the cron this resource created; its jobs, and crons of other sources, stay."""
    state: OperatorState = memo.state
    try:
        removed = await asyncio.to_thread(state.store.crons.remove, name, source="crd")
    except SQLAlchemyError as exc:
        raise kopf.TemporaryError(f"database unavailable: {exc}", delay=5) from exc
    logger.info("cron %s %s", name, "removed" if removed else "was not ours (or already gone); left alone")


def _rfc3339(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
