"""JobHandler and CronSchedule specs as typed values, with the checks a CRD schema cannot make.

The CRD's OpenAPI schema and CEL rules reject malformed resources at the API
server; what reaches us is well-formed but may still be wrong in ways only
code can tell (a cron expression croniter rejects, a time zone that does not
exist). ``SpecError`` carries a reason and message for the ``Ready`` condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobstead.errors import ConfigurationError
from jobstead.retry import RetryPolicy


class SpecError(ValueError):
    """The resource cannot be acted on; ``reason`` is CamelCase for the Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


POLICIES = {"Fixed": "fixed", "Exponential": "exponential", "Explicit": "explicit"}


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = "url"


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

    @property
    def replica_cap(self) -> int:
        """More pods than this could never all be busy under the global limit."""
        return min(self.max_replicas, -(-self.concurrency // self.per_pod_concurrency))

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> JobHandlerSpec:
        try:
            retry_spec = spec.get("retry") or {}
            database = spec["database"]["secretRef"]
            parsed = cls(
                handler=str(spec["handler"]),
                app=str(spec["app"]),
                image=str(spec["image"]),
                database=SecretRef(name=str(database["name"]), key=str(database.get("key") or "url")),
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
            )
        except (KeyError, TypeError) as exc:
            raise SpecError("InvalidSpec", f"spec is missing or has a malformed field: {exc}") from None
        if ":" not in parsed.app:
            raise SpecError("InvalidSpec", f"spec.app must be 'module:attribute', not {parsed.app!r}")
        if parsed.per_pod_concurrency > parsed.concurrency:
            raise SpecError("InvalidSpec", "spec.perPodConcurrency cannot exceed spec.concurrency")
        if parsed.min_replicas > parsed.max_replicas:
            raise SpecError("InvalidSpec", "spec.minReplicas cannot exceed spec.maxReplicas")
        return parsed


def _retry(spec: Mapping[str, Any]) -> RetryPolicy:
    policy = spec.get("policy", "Exponential")
    if policy not in POLICIES:
        raise SpecError("InvalidRetry", f"spec.retry.policy must be one of {', '.join(POLICIES)}, not {policy!r}")
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
        raise SpecError("InvalidRetry", f"spec.retry: {exc}") from None
