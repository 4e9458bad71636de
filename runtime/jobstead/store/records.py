"""Plain values the store hands out: nothing outside ``store/`` sees a Row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import JobError
from ..retry import RetryPolicy
from ..status import AttemptOutcome, JobStatus


def effective_status(stored: str, run_at: datetime, now: datetime) -> JobStatus:
    """A ``scheduled`` job whose time has come is ``queued``, whatever the row says.

    Claims accept both, so nothing has to rewrite rows when their time comes
    (no stager loop, no write burst at the top of the minute).
    """
    status = JobStatus(stored)
    if status is JobStatus.SCHEDULED and run_at <= now:
        return JobStatus.QUEUED
    return status


@dataclass(frozen=True)
class NewJob:
    """One job to insert; ``None`` settings fall back to the handler's at run time."""

    handler: str
    args: dict[str, Any]
    queue: str
    priority: int = 0
    run_at: datetime | None = None
    key: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] | None = None
    max_attempts: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class JobRecord:
    id: int
    handler: str
    queue: str
    priority: int
    status: JobStatus
    args: dict[str, Any]
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int | None
    retry: RetryPolicy | None
    timeout: float | None
    key: str | None
    tenant: str | None
    metadata: dict[str, Any] | None
    result: Any
    error: JobError | None
    checkpoint: Any
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool

    def to_json(self) -> dict[str, Any]:
        """The shape ``jobstead jobs list --json`` prints."""
        return {
            "id": self.id,
            "handler": self.handler,
            "status": self.status.value,
            "queue": self.queue,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": _iso(self.run_at),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "key": self.key,
            "tenant": self.tenant,
            "metadata": self.metadata,
            "worker": self.lease_owner,
        }


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime
    outcome: AttemptOutcome
    error: JobError | None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "outcome": self.outcome.value,
            "error": self.error.to_json() if self.error else None,
        }


@dataclass(frozen=True)
class HandlerDefinition:
    """A handler as the database knows it: what code registered, or a JobHandler set."""

    name: str
    queue: str
    priority: int
    concurrency: int | None
    max_attempts: int
    retry: RetryPolicy
    timeout: float | None
    params: tuple[tuple[str, bool], ...] = field(default=())
    source: str = "code"


@dataclass(frozen=True)
class Completion:
    """The end of one attempt, as the worker decided it; applied only if the lease still holds."""

    job_id: int
    owner: str
    attempt: int
    outcome: AttemptOutcome
    status: JobStatus
    finished_at: datetime
    result: Any = None
    error: JobError | None = None
    #: For ``retrying``: when the next attempt may start.
    run_at: datetime | None = None


@dataclass(frozen=True)
class LeaseReport:
    """What a lease renewal learned: the jobs still ours, and those asked to stop."""

    held: frozenset[int]
    cancel_requested: frozenset[int]


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    by_handler: dict[str, dict[str, int]]
    by_queue: dict[str, dict[str, int]]
    by_tenant: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_status.values()),
            "by_status": self.by_status,
            "by_handler": self.by_handler,
            "by_queue": self.by_queue,
            "by_tenant": self.by_tenant,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
