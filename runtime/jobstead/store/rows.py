"""Row -> record conversion, shared by every part of the store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from .. import transitions
from ..errors import JobError
from ..flow import NO_FLOW_CONTROL, FlowControl, RateLimit
from ..retry import RetryPolicy
from ..status import AttemptOutcome, JobStatus
from .records import AttemptRecord, HandlerDefinition, JobRecord, NewJob, effective_status, evolve


def job_record(row: RowMapping, now: datetime) -> JobRecord:
    status = effective_status(row["status"], row["run_at"], now)
    return JobRecord(
        id=int(row["id"]),
        handler=row["handler"],
        queue=row["queue"],
        priority=int(row["priority"]),
        status=status,
        args=row["args"] or {},
        run_at=row["run_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=int(row["attempts"]),
        max_attempts=row["max_attempts"],
        retry=RetryPolicy.from_json(row["retry"]) if row["retry"] else None,
        timeout=row["timeout"],
        key=row["key"],
        tenant=row["tenant"],
        metadata=row["metadata"],
        result=row["result"],
        # A job's error says why it has not succeeded; once it has, its failed
        # attempts keep theirs (``attempts``), and the job itself has none.
        error=None if status is JobStatus.SUCCEEDED else JobError.from_json(row["error"]),
        checkpoint=row["checkpoint"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        batch_id=row["batch_id"],
        batch_event=row["batch_event"],
        workflow_id=row["workflow_id"],
        step=row["step"],
    )


def attempt_record(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        attempt=int(row["attempt"]),
        worker_id=row["worker_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=AttemptOutcome(row["outcome"]),
        error=JobError.from_json(row["error"]),
    )


def handler_definition(row: RowMapping) -> HandlerDefinition:
    return HandlerDefinition(
        name=row["name"],
        queue=row["queue"],
        priority=int(row["priority"]),
        concurrency=row["concurrency"],
        tenant_concurrency=row["tenant_concurrency"],
        max_attempts=int(row["max_attempts"]),
        retry=RetryPolicy.from_json(row["retry"]),
        timeout=row["timeout"],
        params=tuple((p["name"], bool(p["required"])) for p in row["params"] or ()),
        param_types=tuple((p["name"], p["type"]) for p in row["params"] or () if p.get("type") is not None),
        source=row["source"],
        flow=flow_control(row),
    )


def flow_values(flow: FlowControl) -> dict[str, Any]:
    """A handler's flow control as its row's columns (all NULL, and "hold", for none)."""
    rate = flow.rate_limit
    return {
        "rate_limit": None if rate is None else rate.limit,
        "rate_period": None if rate is None else rate.per,
        "rate_limit_by": flow.rate_limit_by,
        "rate_limits": list(flow.rate_limits) or None,
        "concurrency_by": flow.concurrency_by,
        "concurrency_per_key": flow.concurrency_per_key,
        "sequence_by": flow.sequence_by,
        "sequence_on_failure": flow.sequence_on_failure,
        "fair_by": flow.fair_by,
    }


def flow_control(row: RowMapping) -> FlowControl:
    """The ``FlowControl`` a handler row stores (``flow_values`` read back)."""
    flow = FlowControl(
        rate_limit=None if row["rate_limit"] is None else RateLimit(int(row["rate_limit"]), per=row["rate_period"]),
        rate_limit_by=row["rate_limit_by"],
        rate_limits=tuple(row["rate_limits"] or ()),
        concurrency_by=row["concurrency_by"],
        concurrency_per_key=row["concurrency_per_key"],
        sequence_by=row["sequence_by"],
        sequence_on_failure=row["sequence_on_failure"] or "hold",
        fair_by=row["fair_by"],
    )
    return NO_FLOW_CONTROL if flow.is_none else flow


def status_at_defer(job: NewJob, now: datetime) -> JobStatus:
    return transitions.status_at_defer(job.waiting, job.run_at is not None and job.run_at > now)


def new_job_values(job: NewJob, now: datetime) -> dict[str, Any]:
    """The row a new job is inserted as."""
    return {
        "handler": job.handler,
        "queue": job.queue,
        "priority": job.priority,
        "status": status_at_defer(job, now).value,
        "args": job.args,
        "run_at": job.run_at or now,
        "created_at": now,
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "retry": job.retry.to_json() if job.retry else None,
        "timeout": job.timeout,
        "key": job.key,
        "tenant": job.tenant,
        "metadata": job.metadata,
        "cancel_requested": False,
        "cron_name": job.cron_name,
        "cron_fire_at": job.cron_fire_at,
        "batch_id": job.batch_id,
        "batch_event": job.batch_event,
        "workflow_id": job.workflow_id,
        "step": job.step,
        "waiting": job.waiting if job.workflow_id is not None else None,
        "release_delay": job.delay if job.step is not None else None,
        "rate_key": job.rate_key,
        "concurrency_key": job.concurrency_key,
        "sequence_key": job.sequence_key,
        "fair_key": job.fair_key,
    }


def records_in_input_order(ids: Sequence[int], group: Sequence[NewJob], now: datetime) -> list[JobRecord]:
    """The records of a group just inserted, from the ids its INSERT returned.

    Ids come from the sequence in the order the rows were fed to the INSERT
    (``ORDER BY ord``), so ascending ids are the input order. The jobs of a
    group differ in their arguments only (``option_groups``), so every record
    after the first is a copy of it with its own id and arguments.
    """
    ordered = sorted(ids)
    if len(ordered) != len(group):
        raise ValueError(f"{len(ordered)} ids for {len(group)} jobs")
    if not group:
        return []
    first = sent_record(ordered[0], group[0], now)
    return [first, *(evolve(first, id=i, args=job.args) for i, job in zip(ordered[1:], group[1:], strict=True))]


def sent_record(job_id: int, job: NewJob, now: datetime) -> JobRecord:
    """The record of a job just inserted from ``job``: what reading its row back would give."""
    return JobRecord(
        id=job_id,
        handler=job.handler,
        queue=job.queue,
        priority=job.priority,
        status=status_at_defer(job, now),
        args=job.args,
        run_at=job.run_at or now,
        created_at=now,
        started_at=None,
        finished_at=None,
        attempts=0,
        max_attempts=job.max_attempts,
        retry=job.retry,
        timeout=job.timeout,
        key=None,
        tenant=job.tenant,
        metadata=job.metadata,
        result=None,
        error=None,
        checkpoint=None,
        lease_owner=None,
        lease_expires_at=None,
        cancel_requested=False,
        batch_id=job.batch_id,
        batch_event=job.batch_event,
        workflow_id=job.workflow_id,
        step=job.step,
    )
