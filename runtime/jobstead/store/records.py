"""Plain values the store hands out: nothing outside ``store/`` sees a Row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

from ..cron.schedule import CronSchedule
from ..errors import ConfigurationError, InvalidArguments, JobError
from ..flow import NO_FLOW_CONTROL, FlowControl
from ..json_values import check_json
from ..retry import RetryPolicy
from ..status import AttemptOutcome, JobStatus
from ..transitions import Completion as Completion  # re-exported: records are what the store hands out
from ..transitions import UpstreamRule, shown_status


def effective_status(stored: str, run_at: datetime, now: datetime) -> JobStatus:
    """The status a row shows at ``now`` (``transitions.shown_status``: a due ``scheduled`` job is ``queued``)."""
    return shown_status(stored, run_at <= now)


_Frozen = TypeVar("_Frozen")


def evolve(proto: _Frozen, **changes: Any) -> _Frozen:
    """A copy of a frozen, unslotted dataclass with some fields changed, without running its ``__init__``.

    A frozen dataclass sets every field through ``object.__setattr__``: for
    ``defer_many``'s thousands of jobs and records that differ from the first
    in their arguments (and id) only, one dict copy is several times cheaper.
    Only for classes with no ``__post_init__``: nothing is checked again.
    """
    copy = object.__new__(type(proto))
    fields = copy.__dict__
    fields.update(proto.__dict__)
    fields.update(changes)
    return copy


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
    #: Set for the job of one cron fire: unique per (cron, fire time), so a fire defers at most once.
    cron_name: str | None = None
    cron_fire_at: datetime | None = None
    #: The batch this job is a member of; or, with ``batch_event``, the batch it continues.
    batch_id: int | None = None
    batch_event: str | None = None
    #: The workflow this job is a step of (``step`` names it), or continues (``step`` None).
    workflow_id: int | None = None
    step: str | None = None
    #: Steps it depends on that have not ended: ``blocked`` while more than none.
    waiting: int = 0
    #: The ``delay`` it was given, in seconds (None for an absolute ``run_at``): a workflow
    #: step's counts from its release, not from ``.job()``.
    delay: float | None = None
    #: Flow control keys (``new_jobs.flow_keys``): read from the arguments, so per job like them.
    rate_key: str | None = None
    concurrency_key: str | None = None
    sequence_key: str | None = None
    fair_key: str | None = None


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
    #: The batch this job is a member of, or (``batch_event`` set) the batch it continues.
    batch_id: int | None = None
    batch_event: str | None = None
    #: The workflow this job is a step of (``step`` names it), or continues (``step`` None).
    workflow_id: int | None = None
    step: str | None = None

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
            "batch_id": self.batch_id,
            "workflow_id": self.workflow_id,
            "step": self.step,
        }


@dataclass(slots=True)
class ClaimedJob:
    """A job a worker just claimed: what running it needs, and nothing more.

    One is built for every job on the worker's hot path, so it holds only the
    columns the claim returns (no result, error or lease columns: the claim is
    the lease) and is a plain slotted class (a frozen dataclass's ``__init__``
    costs three times as much). Nothing outside the worker changes it.
    """

    id: int
    handler: str
    queue: str
    priority: int
    args: dict[str, Any]
    run_at: datetime
    created_at: datetime
    attempts: int
    max_attempts: int | None
    retry: RetryPolicy | None
    timeout: float | None
    tenant: str | None
    metadata: dict[str, Any] | None
    checkpoint: Any
    #: The batch it is a member of, or (a continuation) the batch it continues: ``ctx.batch_id``.
    batch_id: int | None = None
    #: The workflow it is a step of (or continues) and its step name: ``ctx.workflow_id``, ``ctx.step``.
    workflow_id: int | None = None
    step: str | None = None


#: Used when a job's handler has no row in the database (no process ever registered it).
FALLBACK_MAX_ATTEMPTS = 5


@dataclass(slots=True)
class EffectiveSettings:
    """The settings one job runs with: its own where it has them, else its handler's.

    Built per job on the worker's hot path: slotted and not frozen (three
    times cheaper to build); nothing changes one once made.

    A job stores only what its ``defer`` overrode (NULL meaning "the
    handler's"), so a change to the handler (in code or in its JobHandler)
    reaches jobs already queued. This is the one place that merges the two.
    """

    max_attempts: int
    retry: RetryPolicy
    timeout: float | None

    @classmethod
    def of(cls, job: ClaimedJob, handler: HandlerDefinition) -> EffectiveSettings:
        return cls(
            max_attempts=job.max_attempts or handler.max_attempts,
            retry=job.retry or handler.retry,
            timeout=cls.timeout_of(job, handler),
        )

    @staticmethod
    def timeout_of(job: ClaimedJob, handler: HandlerDefinition) -> float | None:
        """``of(job, handler).timeout`` without building the rest: read for every job a worker starts."""
        return job.timeout or handler.timeout

    @staticmethod
    def max_attempts_of(job_value: int | None, handler_value: int | None) -> int:
        """The same rule where only the two columns are at hand (the rescuer's query)."""
        return job_value or handler_value or FALLBACK_MAX_ATTEMPTS


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
    #: (name, JSON type spec) of the parameters whose annotation is checked (``signature.json_type_spec``).
    param_types: tuple[tuple[str, Any], ...] = field(default=())
    source: str = "code"
    #: At most this many jobs of one tenant run at once (None: no per-tenant limit).
    tenant_concurrency: int | None = None
    #: Rate limits, limits per key, sequences, fair sharing (``jobstead.flow``).
    flow: FlowControl = NO_FLOW_CONTROL


@dataclass(frozen=True)
class LimitUse:
    """One limit and how much of it is in use (``Registry.limit_use``; ``jobstead stats``)."""

    #: The handler it limits; None for a shared rate (``app.rate_limit``).
    handler: str | None
    #: ``concurrency``, ``concurrency_per_key``, ``rate_limit``, ``rate_limit_per_key`` or ``rate_limits:<name>``.
    limit: str
    in_use: int
    of: int
    #: A rate's period in seconds.
    per: float | None = None
    #: A limit per key: what the key is (``"tenant"`` or a parameter); ``in_use`` is then the busiest key's.
    by: str | None = None
    #: A limit per key: how many keys are at it now.
    at_limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        found = {"handler": self.handler, "limit": self.limit, "in_use": self.in_use, "of": self.of, "per": self.per}
        if self.by is not None:  # a limit per key: its key, and how many keys are at it
            found |= {"by": self.by, "at_limit": self.at_limit}
        return found


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


#: A batch's statuses: active until every member is final.
BatchStatus = Literal["active", "succeeded", "failed", "cancelled"]
BATCH_STATUSES: tuple[BatchStatus, ...] = get_args(BatchStatus)
#: The events a batch can have continuations for.
BatchEvent = Literal["success", "finish", "failure"]
BATCH_EVENTS: tuple[BatchEvent, ...] = get_args(BatchEvent)


@dataclass(frozen=True)
class BatchStats:
    """How many of a batch's members (or a tenant's batch members) are in each state.

    Counted from the job rows each time (never a counter that a crash could
    leave wrong); continuations are not members and are not counted.
    """

    total: int = 0
    scheduled: int = 0
    queued: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> BatchStats:
        fields = {
            k: counts.get(k, 0)
            for k in ("scheduled", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")
        }
        return cls(total=sum(counts.values()), **fields)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.dead + self.cancelled

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "scheduled": self.scheduled,
            "queued": self.queued,
            "running": self.running,
            "retrying": self.retrying,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "dead": self.dead,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True)
class BatchRecord:
    id: int
    status: BatchStatus
    tenant: str | None
    metadata: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
    cancelled_at: datetime | None
    stats: BatchStats
    #: (event, job id) of every continuation fired so far, in firing order.
    continuations: tuple[tuple[str, int], ...]
    #: The events this batch has a continuation for.
    events: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The shape ``jobstead batches show ID --json`` prints."""
        return {
            "id": self.id,
            "status": self.status,
            "tenant": self.tenant,
            "metadata": self.metadata,
            "created_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at),
            "cancelled_at": _iso(self.cancelled_at),
            "stats": self.stats.to_json(),
            "continuations": [{"event": event, "job_id": job_id} for event, job_id in self.continuations],
            "events": list(self.events),
        }


#: A workflow's statuses: active until nothing else can run.
WorkflowStatus = Literal["active", "succeeded", "failed", "cancelled"]
WORKFLOW_STATUSES: tuple[WorkflowStatus, ...] = get_args(WorkflowStatus)
#: The events a workflow can have continuations for (as a batch's).
WORKFLOW_EVENTS: tuple[BatchEvent, ...] = BATCH_EVENTS


@dataclass(frozen=True)
class WorkflowStats:
    """How many of a workflow's steps are in each state (continuations are not steps)."""

    total: int = 0
    blocked: int = 0
    scheduled: int = 0
    queued: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> WorkflowStats:
        fields = {k: counts.get(k, 0) for k in _WORKFLOW_STAT_FIELDS}
        return cls(total=sum(counts.values()), **fields)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.dead + self.cancelled

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, **{k: getattr(self, k) for k in _WORKFLOW_STAT_FIELDS}}


_WORKFLOW_STAT_FIELDS = (
    "blocked",
    "scheduled",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
)


@dataclass(frozen=True)
class NewStep:
    """One step to write: its name in the workflow, its job, the steps it waits for, and what it
    does when one of them does not succeed."""

    name: str
    job: NewJob
    after: tuple[str, ...] = ()
    on_upstream_failure: UpstreamRule = UpstreamRule.CANCEL


@dataclass(frozen=True)
class Growth:
    """Steps a running step of workflow ``workflow_id`` adds (``ctx.add_steps``), written with its success.

    ``before``: existing blocked steps that must also wait for every new step.
    """

    workflow_id: int
    step: str
    steps: tuple[NewStep, ...]
    before: tuple[str, ...] = ()


@dataclass(frozen=True)
class Upstream:
    """A step's direct dependency as its handler sees it (``ctx.upstream``, ``ctx.upstream_failures``)."""

    step: str
    status: JobStatus
    result: Any
    error: JobError | None


@dataclass(frozen=True)
class StepRecord:
    """One step of a workflow as it is now."""

    name: str
    job_id: int
    status: JobStatus
    #: The steps it waits for, by name (a list, as ``workflows show --json`` prints it).
    after: list[str]
    #: Why it was cancelled, when a step it depends on did not succeed (names that step); else None.
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "job_id": self.job_id,
            "status": self.status.value,
            "after": list(self.after),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class WorkflowRecord:
    id: int
    name: str
    status: WorkflowStatus
    tenant: str | None
    metadata: dict[str, Any] | None
    stats: WorkflowStats
    #: Every step by name, in the order they were added (empty when read without steps).
    steps: dict[str, StepRecord]
    #: (event, job id) of every continuation fired so far, in firing order.
    continuations: list[tuple[str, int]]
    created_at: datetime
    finished_at: datetime | None
    cancelled_at: datetime | None = None
    #: The events this workflow has a continuation for.
    events: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The shape ``jobstead workflows show ID --json`` prints."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "tenant": self.tenant,
            "metadata": self.metadata,
            "stats": self.stats.to_json(),
            "steps": [step.to_json() for step in self.steps.values()],
            "continuations": [{"event": event, "job_id": job_id} for event, job_id in self.continuations],
        }


#: Where a cron comes from; each source owns its rows (see ``store.crons``).
CronSource = Literal["code", "database", "crd"]
#: What a fire does while the cron's previous job is still live (scheduled, queued, retrying, running).
Overlap = Literal["allow", "skip", "replace"]
CRON_SOURCES: tuple[CronSource, ...] = get_args(CronSource)
OVERLAP_POLICIES: tuple[Overlap, ...] = get_args(Overlap)
#: A CronSchedule's ``concurrencyPolicy`` (batch/v1 CronJob's words) -> ours.
CONCURRENCY_POLICIES: dict[str, Overlap] = {"Allow": "allow", "Forbid": "skip", "Replace": "replace"}
NAME_LENGTH = 200


@dataclass(frozen=True)
class CronDefinition:
    """A cron as code, the CLI or a ``CronSchedule`` resource defines it.

    Each fire defers an ordinary job of ``handler`` with ``args``; ``queue``,
    ``priority`` and ``tenant`` left ``None`` take the handler's defaults.
    ``overlap``: ``allow`` fires regardless; ``skip`` fires nothing while the
    cron's previous job is live; ``replace`` cancels that job, then fires.
    ``starting_deadline`` (seconds): a fire found later than this (scheduler
    down, or busy) is skipped; ``None`` runs the latest missed fire once.
    """

    name: str
    schedule: str
    handler: str
    timezone: str = "UTC"
    args: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    tenant: str | None = None
    enabled: bool = True
    overlap: Overlap = "allow"
    starting_deadline: float | None = None
    source: CronSource = "code"

    def check(self) -> CronSchedule:
        """Refuse what cannot be stored or scheduled (``ConfigurationError``); return the parsed schedule."""
        for label, value in (("name", self.name), ("handler", self.handler)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"cron {label} must be a non-empty string")
            if len(value) > NAME_LENGTH:
                raise ConfigurationError(f"cron {label} {value[:40]!r}...: at most {NAME_LENGTH} characters")
        for label, optional in (("queue", self.queue), ("tenant", self.tenant)):
            if optional is not None and (not isinstance(optional, str) or not optional or len(optional) > NAME_LENGTH):
                raise ConfigurationError(f"cron {self.name}: {label} must be a non-empty string (or None)")
        if self.priority is not None and (isinstance(self.priority, bool) or not isinstance(self.priority, int)):
            raise ConfigurationError(f"cron {self.name}: priority must be a whole number (or None)")
        if self.overlap not in OVERLAP_POLICIES:
            raise ConfigurationError(f"cron {self.name}: overlap must be one of {', '.join(OVERLAP_POLICIES)}")
        if self.source not in CRON_SOURCES:
            raise ConfigurationError(f"cron {self.name}: source must be one of {', '.join(CRON_SOURCES)}")
        if self.starting_deadline is not None and (
            isinstance(self.starting_deadline, bool)
            or not isinstance(self.starting_deadline, int | float)
            or not 0 < self.starting_deadline < float("inf")
        ):
            raise ConfigurationError(f"cron {self.name}: starting_deadline must be a positive number of seconds")
        if not isinstance(self.args, dict):
            raise ConfigurationError(f"cron {self.name}: args must be a dict of keyword arguments")
        try:
            check_json(self.args, f"cron {self.name}")
        except InvalidArguments as exc:
            raise ConfigurationError(str(exc)) from None
        return CronSchedule.parse(self.schedule, self.timezone)


@dataclass(frozen=True)
class CronRecord:
    """A cron as the database holds it: its definition plus what the schedulers did with it.

    ``handled_until``: every fire time at or before it has been dealt with
    (fired, or skipped as missed or overlapping); the next fire is the first
    after it. ``next_fire_at`` is that time (``None`` when disabled): one in
    the past means no scheduler is running the cron.
    """

    name: str
    schedule: str
    handler: str
    timezone: str
    args: dict[str, Any]
    queue: str | None
    priority: int | None
    tenant: str | None
    enabled: bool
    overlap: Overlap
    starting_deadline: float | None
    source: CronSource
    created_at: datetime
    updated_at: datetime
    handled_until: datetime
    last_fire_at: datetime | None
    last_job_id: int | None
    next_fire_at: datetime | None

    @property
    def definition(self) -> CronDefinition:
        return CronDefinition(
            name=self.name,
            schedule=self.schedule,
            handler=self.handler,
            timezone=self.timezone,
            args=self.args,
            queue=self.queue,
            priority=self.priority,
            tenant=self.tenant,
            enabled=self.enabled,
            overlap=self.overlap,
            starting_deadline=self.starting_deadline,
            source=self.source,
        )

    def to_json(self) -> dict[str, Any]:
        """The shape ``jobstead crons list --json`` prints."""
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "handler": self.handler,
            "args": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "tenant": self.tenant,
            "enabled": self.enabled,
            "overlap": self.overlap,
            "starting_deadline": self.starting_deadline,
            "source": self.source,
            "last_fire_at": _iso(self.last_fire_at),
            "next_fire_at": _iso(self.next_fire_at),
            "last_job_id": self.last_job_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
