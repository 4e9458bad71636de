"""JobHandler and CronSchedule specs as typed values, with the checks a CRD schema cannot make.

The CRD's OpenAPI schema and CEL rules reject malformed resources at the API
server; what reaches us is well-formed but may still be wrong in ways only
code can tell (a cron expression croniter rejects, a time zone that does not
exist). ``SpecError`` carries a reason and message for the ``Ready`` condition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jobstead import ConfigurationError, InvalidOption, RetryPolicy
from jobstead.flow import MAX_CONCURRENCY, NO_FLOW_CONTROL, FlowControl, RateLimit, SequenceOnFailure
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
    #: ``rateLimit``, ``concurrencyBy``/``concurrencyPerKey``, ``sequenceBy``, ``fairBy``, as the runtime holds them.
    flow: FlowControl = NO_FLOW_CONTROL

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
                flow=_flow(spec),
            )
        except (KeyError, TypeError) as exc:
            raise SpecError(Reason.INVALID_SPEC, f"spec is missing or has a malformed field: {exc}") from None
        if ":" not in parsed.app:
            raise SpecError(Reason.INVALID_SPEC, f"spec.app must be 'module:attribute', not {parsed.app!r}")
        if not 1 <= parsed.concurrency <= MAX_CONCURRENCY:
            raise SpecError(Reason.INVALID_SPEC, f"spec.concurrency must be between 1 and {MAX_CONCURRENCY}")
        if parsed.per_pod_concurrency > parsed.concurrency:
            raise SpecError(Reason.INVALID_SPEC, "spec.perPodConcurrency cannot exceed spec.concurrency")
        if parsed.tenant_concurrency is not None and not 1 <= parsed.tenant_concurrency <= parsed.concurrency:
            raise SpecError(Reason.INVALID_SPEC, "spec.tenantConcurrency must be between 1 and spec.concurrency")
        if parsed.min_replicas > parsed.max_replicas:
            raise SpecError(Reason.INVALID_SPEC, "spec.minReplicas cannot exceed spec.maxReplicas")
        per_key = parsed.flow.concurrency_per_key
        if per_key is not None and per_key > parsed.concurrency:
            raise SpecError(
                Reason.INVALID_SPEC, "spec.concurrencyPerKey must be less than or equal to spec.concurrency"
            )
        if parsed.flow.concurrency_by is not None and parsed.tenant_concurrency is not None:
            raise SpecError(
                Reason.INVALID_SPEC,
                "spec.concurrencyBy and spec.tenantConcurrency exclude each other: tenantConcurrency: N is the "
                "short form of concurrencyBy: tenant with concurrencyPerKey: N",
            )
        return parsed

    @property
    def flow_keys(self) -> list[tuple[str, str]]:
        """(field, key) for each ``*By`` that is set, the field named as the resource names it."""
        flow = self.flow
        keys = (
            ("rate_limit_by", flow.rate_limit_by),
            ("concurrency_by", flow.concurrency_by),
            ("sequence_by", flow.sequence_by),
            ("fair_by", flow.fair_by),
        )
        return [(FLOW_FIELDS[option], key) for option, key in keys if key is not None]

    def unknown_keys(self, parameters: Collection[str]) -> str | None:
        """Why a ``*By`` field names no parameter of the handler, or None: one line for the ``Ready`` message.

        ``parameters`` are the ones the app's workers published for the handler;
        none published (no worker has started yet) means nothing can be said.
        """
        if not parameters:
            return None
        for name, key in self.flow_keys:
            if key != TENANT and key not in parameters:
                known = ", ".join(sorted(parameters))
                return (
                    f"spec.{name} names {key!r}, which is not a parameter of handler {self.handler!r} "
                    f"(its parameters: {known}; or tenant)"
                )
        return None


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


#: The runtime's option names and the JobHandler fields that set them, for messages that name the field.
FLOW_FIELDS = {
    "rate_limit": "rateLimit",
    "rate_limit_by": "rateLimit.by",
    "concurrency_by": "concurrencyBy",
    "concurrency_per_key": "concurrencyPerKey",
    "sequence_by": "sequenceBy",
    "sequence_on_failure": "sequenceOnFailure",
    "fair_by": "fairBy",
}
#: ``sequenceOnFailure`` values and the runtime's.
ON_FAILURE: dict[str, SequenceOnFailure] = {"Hold": "hold", "Continue": "continue"}
#: The key that is the job's tenant rather than one of its arguments.
TENANT = "tenant"
#: What a ``*By`` field may hold: ``tenant`` or a Python parameter name (the CRD's CEL rule says the same).
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _flow(spec: Mapping[str, Any]) -> FlowControl:
    """The flow control fields, checked as the CRD's schema checks them, so the webhook and Ready say the same."""
    raw_rate = spec.get("rateLimit")
    rate: RateLimit | None = None
    rate_by: str | None = None
    if raw_rate is not None:
        if not isinstance(raw_rate, Mapping):
            raise SpecError(Reason.INVALID_SPEC, "spec.rateLimit must be an object: {limit: 100, periodSeconds: 1}")
        limit, period = _count(raw_rate.get("limit"), "rateLimit.limit"), raw_rate.get("periodSeconds")
        if isinstance(period, bool) or not isinstance(period, int | float) or not math.isfinite(period) or period <= 0:
            raise SpecError(
                Reason.INVALID_SPEC, f"spec.rateLimit.periodSeconds must be a number of seconds above 0, not {period!r}"
            )
        try:  # the runtime's bounds (a ring of at most a million rows, a window of at most a year)
            rate = RateLimit(limit, per=float(period))
        except InvalidOption as exc:
            raise SpecError(Reason.INVALID_SPEC, f"spec.rateLimit {exc.detail}") from None
        rate_by = _key(raw_rate, "by", "rateLimit.by")
    raw_per_key = spec.get("concurrencyPerKey")
    per_key = _count(raw_per_key, "concurrencyPerKey") if raw_per_key is not None else None
    concurrency_by = _key(spec, "concurrencyBy", "concurrencyBy")
    if per_key is not None and concurrency_by is None:
        raise SpecError(
            Reason.INVALID_SPEC,
            "spec.concurrencyPerKey requires spec.concurrencyBy, the key it counts per (for example customer_id)",
        )
    if concurrency_by is not None and per_key is None:
        raise SpecError(
            Reason.INVALID_SPEC,
            "spec.concurrencyBy requires spec.concurrencyPerKey, how many may run per key (for example 2)",
        )
    sequence_by = _key(spec, "sequenceBy", "sequenceBy")
    on_failure = spec.get("sequenceOnFailure")
    if on_failure is not None and on_failure not in ON_FAILURE:
        raise SpecError(Reason.INVALID_SPEC, f"spec.sequenceOnFailure must be Hold or Continue, not {on_failure!r}")
    if on_failure is not None and sequence_by is None:
        raise SpecError(
            Reason.INVALID_SPEC,
            "spec.sequenceOnFailure requires spec.sequenceBy, the key jobs are sequenced by (for example account_id)",
        )
    try:
        return FlowControl(
            rate_limit=rate,
            rate_limit_by=rate_by,
            concurrency_by=concurrency_by,
            concurrency_per_key=per_key,
            sequence_by=sequence_by,
            sequence_on_failure=ON_FAILURE[on_failure or "Hold"],
            fair_by=_key(spec, "fairBy", "fairBy"),
        )
    except InvalidOption as exc:  # what the runtime refuses beyond the checks above, named as the resource names it
        raise SpecError(Reason.INVALID_SPEC, f"spec.{FLOW_FIELDS.get(exc.option, exc.option)} {exc.detail}") from None


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(Reason.INVALID_SPEC, f"spec.{where} must be a whole number of at least 1, not {value!r}")
    return value


def _key(spec: Mapping[str, Any], name: str, where: str) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY.match(value):
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.{where} must be tenant or the name of a parameter of the handler, "
            f"such as customer_id, not {value!r}",
        )
    return value


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
