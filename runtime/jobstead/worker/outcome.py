"""Turning how a handler call ended into the job's next state.

``decide`` only reads how the call ended; what each ending makes of the job
(retrying or dead, what the row keeps) is ``jobstead.transitions``'s, the one
place every change of a job's status is decided.
"""

from __future__ import annotations

import json
from datetime import datetime

from .. import transitions
from ..cancel import CancelReason
from ..errors import JobError, PermanentError
from ..status import AttemptOutcome
from ..store import ClaimedJob, Completion, EffectiveSettings, HandlerDefinition
from ..transitions import JobsteadErrorType
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
        return transitions.succeeded(job.id, owner, job.attempts, now)

    def failure(error: JobError, outcome: AttemptOutcome = AttemptOutcome.FAILED) -> Completion:
        effective = EffectiveSettings.of(job, settings)
        return transitions.failed(
            job.id,
            owner,
            job.attempts,
            now,
            error,
            attempts_allowed=effective.max_attempts,
            retry=effective.retry,
            outcome=outcome,
        )

    if cancel_reason is CancelReason.CANCELLED:
        return transitions.cancelled(job.id, owner, job.attempts, now)
    if finished.timed_out:
        timeout = EffectiveSettings.of(job, settings).timeout
        return failure(
            JobError(
                type=JobsteadErrorType.TIMEOUT,
                message=f"the handler ran longer than {timeout} s",
                traceback="",
            ),
            AttemptOutcome.TIMED_OUT,
        )
    if finished.exception is not None:
        error = JobError.from_exception(finished.exception)
        if isinstance(finished.exception, PermanentError):
            return transitions.failed_for_good(job.id, owner, job.attempts, now, error)
        return failure(error)
    try:
        if finished.value is not None:
            json.dumps(finished.value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return failure(
            JobError.from_exception(TypeError(f"the handler's return value is not JSON-serialisable: {exc}"))
        )
    return transitions.succeeded(job.id, owner, job.attempts, now, finished.value)
