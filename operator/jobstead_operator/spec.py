"""JobHandler and CronSchedule specs as typed values, with the checks a CRD schema cannot make.

The CRD's OpenAPI schema and CEL rules reject malformed resources at the API
server; what reaches us is well-formed but may still be wrong in ways only
code can tell (a cron expression croniter rejects, a time zone that does not
exist). ``SpecError`` carries a reason and message for the ``Ready`` condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jobstead import ConfigurationError, RetryPolicy
from jobstead.store import CronDefinition

from .reasons import Reason


class SpecError(ValueError):
    """The resource cannot be acted on: only an edit of it can fix this."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


POLICIES = {"Fixed": "fixed", "Exponential": "exponential", "Explicit": "explicit"}
CONCURRENCY_POLICIES = {"Allow": "allow", "Forbid": "skip", "Replace": "replace"}


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = "url"

    @classmethod
    def parse(cls, database: Mapping[str, Any]) -> SecretRef:
        ref = database["secretRef"]
        return cls(name=str(ref["name"]), key=str(ref.get("key") or "url"))


#: The port worker pods serve ``/metrics`` on when neither the resource nor the operator names one.
DEFAULT_METRICS_PORT = 9090


@dataclass(frozen=True)
class MetricsSpec:
    """``spec.metrics``: ``enabled`` None leaves it to the operator's default (``--worker-metrics-port``)."""

    enabled: bool | None = None
    port: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> MetricsSpec:
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise TypeError(f"spec.metrics must be an object, not {type(raw).__name__}")
        enabled = raw.get("enabled")
        port = raw.get("port")
        return cls(enabled=bool(enabled) if enabled is not None else None, port=int(port) if port else None)

    def port_with(self, operator_default: int | None) -> int | None:
        """The port the worker pods serve metrics on, or None: the resource's choice, else the operator's."""
        if self.enabled is False or (self.enabled is None and operator_default is None):
            return None
        return self.port or operator_default or DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class JobHandlerSpec:
    handler: str
    app: str
    image: str
    database: SecretRef
    concurrency: int
    queue: str = "default"
    per_pod_concurrency: int = 1
    min_replicas: int = 0
    max_replicas: int = 10
    max_attempts: int = 5
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: int | None = None
    paused: bool = False
    shutdown_grace_seconds: int = 30
    pod_template: Mapping[str, Any] = field(default_factory=dict)
    tenant_concurrency: int | None = None
    metrics: MetricsSpec = field(default_factory=MetricsSpec)

    @property
    def replica_cap(self) -> int:
        """More pods than this could never all be busy under the global limit."""
        return min(self.max_replicas, -(-self.concurrency // self.per_pod_concurrency))

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> JobHandlerSpec:
        try:
            retry_spec = spec.get("retry") or {}
            parsed = cls(
                handler=str(spec["handler"]),
                app=str(spec["app"]),
                image=str(spec["image"]),
                database=SecretRef.parse(spec["database"]),
                concurrency=int(spec["concurrency"]),
                queue=str(spec.get("queue") or "default"),
                per_pod_concurrency=int(spec.get("perPodConcurrency", 1)),
                min_replicas=int(spec.get("minReplicas", 0)),
                max_replicas=int(spec.get("maxReplicas", 10)),
                max_attempts=int(retry_spec.get("maxAttempts", 5)),
                retry=_retry(retry_spec),
                timeout_seconds=int(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") is not None else None,
                paused=bool(spec.get("paused", False)),
                shutdown_grace_seconds=int(spec.get("shutdownGraceSeconds", 30)),
                pod_template=dict(spec.get("podTemplate") or {}),
                tenant_concurrency=(
                    int(spec["tenantConcurrency"]) if spec.get("tenantConcurrency") is not None else None
                ),
                metrics=MetricsSpec.parse(spec.get("metrics")),
            )
        except (KeyError, TypeError) as exc:
            raise SpecError(Reason.INVALID_SPEC, f"spec is missing or has a malformed field: {exc}") from None
        if ":" not in parsed.app:
            raise SpecError(Reason.INVALID_SPEC, f"spec.app must be 'module:attribute', not {parsed.app!r}")
        if parsed.per_pod_concurrency > parsed.concurrency:
            raise SpecError(Reason.INVALID_SPEC, "spec.perPodConcurrency cannot exceed spec.concurrency")
        if parsed.tenant_concurrency is not None and not 1 <= parsed.tenant_concurrency <= parsed.concurrency:
            raise SpecError(Reason.INVALID_SPEC, "spec.tenantConcurrency must be between 1 and spec.concurrency")
        if parsed.min_replicas > parsed.max_replicas:
            raise SpecError(Reason.INVALID_SPEC, "spec.minReplicas cannot exceed spec.maxReplicas")
        return parsed


@dataclass(frozen=True)
class CronScheduleSpec:
    """A CronSchedule, checked once: the cron row it owns and the database it names (if it names one)."""

    cron: CronDefinition
    database: SecretRef | None = None

    @property
    def handler(self) -> str:
        return self.cron.handler

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> CronScheduleSpec:
        """The reason says which field is wrong: the zone is checked on its own before the schedule."""
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy not in CONCURRENCY_POLICIES:
            raise SpecError(
                Reason.INVALID_SPEC, f"spec.concurrencyPolicy must be Allow, Forbid or Replace, not {policy!r}"
            )
        try:
            deadline = spec.get("startingDeadlineSeconds")
            database = SecretRef.parse(spec["database"]) if spec.get("database") else None
            cron = CronDefinition(
                name=name,
                schedule=str(spec["schedule"]),
                handler=str(spec["handler"]),
                timezone=str(spec.get("timeZone") or "UTC"),
                args=dict(spec.get("args") or {}),
                queue=spec.get("queue"),
                priority=spec.get("priority"),
                tenant=spec.get("tenant"),
                enabled=not spec.get("suspend", False),
                overlap=CONCURRENCY_POLICIES[policy],  # type: ignore[arg-type]
                starting_deadline=float(deadline) if deadline is not None else None,
                source="crd",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(Reason.INVALID_SPEC, f"spec is missing or has a malformed field: {exc}") from None
        try:  # the zone alone, with a schedule that cannot be wrong
            CronDefinition(name="zone", schedule="@daily", handler="zone", timezone=cron.timezone).check()
        except ConfigurationError as exc:
            raise SpecError(Reason.INVALID_TIME_ZONE, f"spec.timeZone: {exc}") from None
        try:  # everything but the schedule
            replace(cron, schedule="@daily").check()
        except ConfigurationError as exc:
            raise SpecError(Reason.INVALID_SPEC, f"spec: {exc}") from None
        try:
            cron.check()
        except ConfigurationError as exc:
            raise SpecError(Reason.INVALID_SCHEDULE, f"spec.schedule: {exc}") from None
        return cls(cron=cron, database=database)


def _retry(spec: Mapping[str, Any]) -> RetryPolicy:
    policy = spec.get("policy", "Exponential")
    if policy not in POLICIES:
        raise SpecError(Reason.INVALID_RETRY, f"spec.retry.policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    try:
        if policy == "Fixed":
            return RetryPolicy.fixed(float(spec.get("delaySeconds", 1)))
        if policy == "Explicit":
            return RetryPolicy.explicit([float(d) for d in spec.get("delaysSeconds") or []])
        cap = spec.get("maxDelaySeconds")
        return RetryPolicy.exponential(
            float(spec.get("delaySeconds", 1)),
            cap=float(cap) if cap is not None else 3600.0,
            jitter=int(spec.get("jitterPercent", 10)) / 100,
        )
    except (ConfigurationError, ValueError) as exc:
        raise SpecError(Reason.INVALID_RETRY, f"spec.retry: {exc}") from None
