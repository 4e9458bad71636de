"""Turning how a handler call ended into the job's next state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ..cancel import CancelReason
from ..errors import JobError, PermanentError
from ..status import AttemptOutcome, JobStatus
from ..store import ClaimedJob, Completion, EffectiveSettings, HandlerDefinition
from .execution import Finished


def decide(
    job: ClaimedJob,
    settings: HandlerDefinition,
    finished: Finished,
    *,
    owner: str,
    now: datetime,
    cancel_reason: CancelReason | None,
) -> Completion:
    """The job's own settings win over its handler's (which come from the database)."""
    nothing_happened = not (finished.timed_out or finished.cancelled or cancel_reason)
    if nothing_happened and finished.value is None and finished.exception is None:
        # Most jobs: succeeded with nothing to return, nothing to check.
        return Completion(
            job_id=job.id,
            owner=owner,
            attempt=job.attempts,
            outcome=AttemptOutcome.SUCCEEDED,
            status=JobStatus.SUCCEEDED,
            finished_at=now,
        )

    def end(outcome: AttemptOutcome, status: JobStatus, **more: Any) -> Completion:
        return Completion(
            job_id=job.id,
            owner=owner,
            attempt=job.attempts,
            finished_at=now,
            outcome=outcome,
            status=status,
            **more,
        )

    def failure(error: JobError, outcome: AttemptOutcome = AttemptOutcome.FAILED) -> Completion:
        effective = EffectiveSettings.of(job, settings)
        if job.attempts >= effective.max_attempts:
            return end(outcome, JobStatus.DEAD, error=error)
        delay = effective.retry.delay_after(job.attempts)
        return end(outcome, JobStatus.RETRYING, error=error, run_at=now + timedelta(seconds=delay))

    if cancel_reason is CancelReason.CANCELLED:
        return end(AttemptOutcome.CANCELLED, JobStatus.CANCELLED)
    if finished.timed_out:
        timeout = EffectiveSettings.of(job, settings).timeout
        return failure(
            JobError(
                type="jobstead.Timeout",
                message=f"the handler ran longer than {timeout} s",
                traceback="",
            ),
            AttemptOutcome.TIMED_OUT,
        )
    if finished.exception is not None:
        error = JobError.from_exception(finished.exception)
        if isinstance(finished.exception, PermanentError):
            return end(AttemptOutcome.FAILED, JobStatus.FAILED, error=error)
        return failure(error)
    try:
        if finished.value is not None:
            json.dumps(finished.value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return failure(
            JobError.from_exception(TypeError(f"the handler's return value is not JSON-serialisable: {exc}"))
        )
    return end(AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, result=finished.value)
