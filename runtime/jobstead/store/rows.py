"""Row -> record conversion, shared by every part of the store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import RowMapping

from ..errors import JobError
from ..retry import RetryPolicy
from ..status import AttemptOutcome
from .records import AttemptRecord, HandlerDefinition, JobRecord, effective_status


def job_record(row: RowMapping, now: datetime) -> JobRecord:
    return JobRecord(
        id=int(row["id"]),
        handler=row["handler"],
        queue=row["queue"],
        priority=int(row["priority"]),
        status=effective_status(row["status"], row["run_at"], now),
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
        error=JobError.from_json(row["error"]),
        checkpoint=row["checkpoint"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
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
        max_attempts=int(row["max_attempts"]),
        retry=RetryPolicy.from_json(row["retry"]),
        timeout=row["timeout"],
        params=tuple((p["name"], bool(p["required"])) for p in row["params"] or ()),
        source=row["source"],
    )
