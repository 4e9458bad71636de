"""Every change of a job's status, decided here once; the store only writes what it is told.

Two kinds of change reach a job row:

* **the end of an attempt**, held under a lease: a success, a failure (retried
  or dead), a permanent failure, a cancel the worker honoured, a lease lost to
  the rescuer, a job handed back on shutdown. Each is a ``Completion`` that
  states the row's new values (``final_at``, ``kept_owner``, ``keeps_result``,
  ``logged``, ``spends_attempt``), built by one of the functions below; every
  driver writes those values and derives none of them again.
* **steering from outside a worker** (the CLI, the dashboard, the API): cancel,
  ask a running job to stop, retry from dead, delete, purge. Each is a
  ``JobChange``: the stored statuses it applies to (the write is a
  compare-and-set on them) and what the row becomes. The store has one writer
  for them, used with one id or many.

Why here and not in ``store/`` or ``worker/``: both sides need it (``decide``
in the worker, the rescuer and the steering operations in the store), and the
store may import only pure value types (``tests/unit/test_layering.py``). So
this module imports nothing but value types (``status``, ``errors``,
``retry``) and nothing imports the store from here; ``store.records``
re-exports ``Completion``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from .errors import JobError
from .retry import RetryPolicy
from .status import CLAIMABLE_STATUSES, FINAL_STATUSES, AttemptOutcome, JobStatus

# -- how a stored status is shown ----------------------------------------------------


def shown_status(stored: str, due: bool) -> JobStatus:
    """A ``scheduled`` job whose time has come (``due``) is shown ``queued``, whatever the row says.

    Claims accept both, so nothing has to rewrite rows when their time comes
    (no stager loop, no write burst at the top of the minute). Every place that
    shows a status (records, counts, the dashboard) goes through this; lists
    filter by the same rule in SQL (``store.queries.status_condition``).
    """
    status = JobStatus(stored)
    if status is JobStatus.SCHEDULED and due:
        return JobStatus.QUEUED
    return status


# -- the end of an attempt -----------------------------------------------------------


class JobsteadErrorType(StrEnum):
    """The error types Jobstead records itself, where no handler raised anything."""

    #: The handler ran past its timeout.
    TIMEOUT = "jobstead.Timeout"
    #: The rescuer found the lease expired: its worker crashed or stalled.
    LEASE_EXPIRED = "jobstead.LeaseExpired"
    #: The job's worker ran in a pod that is gone (``release_host``).
    WORKER_GONE = "jobstead.WorkerGone"
    #: A workflow step cancelled because a step it depends on did not succeed.
    UPSTREAM_FAILED = "jobstead.UpstreamFailed"
    #: A workflow step cancelled (or stopped) because its whole workflow was cancelled.
    WORKFLOW_CANCELLED = "jobstead.WorkflowCancelled"

    @property
    def lost_lease(self) -> bool:
        """Whether the attempt ended because its worker lost the job, not because the handler did anything."""
        return self in (JobsteadErrorType.LEASE_EXPIRED, JobsteadErrorType.WORKER_GONE)


@dataclass(slots=True)
class Completion:
    """The end of one attempt, as decided below; applied only if the lease still holds.

    One per job on the worker's hot path: slotted and not frozen, which makes it
    three times cheaper to build; nothing changes one once made.
    """

    job_id: int
    owner: str
    attempt: int
    outcome: AttemptOutcome
    status: JobStatus
    finished_at: datetime
    result: Any = None
    error: JobError | None = None
    #: For ``retrying`` and ``queued``: when the next attempt may start.
    run_at: datetime | None = None
    #: Steps a workflow's step added as it ran (``ctx.add_steps``, a ``store.records.Growth``):
    #: written with its success, in the same transaction; never with any other end.
    growth: Any = None

    # What the row becomes, derived here once so that every driver writes the same thing.

    @property
    def final_at(self) -> datetime | None:
        """``finished_at`` of the job: set when this attempt ends it for good (its batch may settle)."""
        return self.finished_at if self.status in FINAL_STATUSES else None

    @property
    def kept_owner(self) -> str | None:
        """``lease_owner`` after the attempt: a success keeps its worker (the job row is its attempt log)."""
        return self.owner if self.outcome is AttemptOutcome.SUCCEEDED else None

    @property
    def keeps_result(self) -> bool:
        """Whether ``result`` is written: a success's value; any other end leaves the column as it was."""
        return self.outcome is AttemptOutcome.SUCCEEDED

    @property
    def logged(self) -> bool:
        """Whether the attempt gets a row in ``attempts`` (a success lives in the job row)."""
        return self.outcome is not AttemptOutcome.SUCCEEDED

    @property
    def spends_attempt(self) -> bool:
        """Whether the attempt counts against ``max_attempts``: all but one handed back on shutdown."""
        return self.outcome is not AttemptOutcome.RELEASED


def succeeded(job_id: int, owner: str, attempt: int, now: datetime, result: Any = None) -> Completion:
    return Completion(job_id, owner, attempt, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, now, result)


def failed(
    job_id: int,
    owner: str,
    attempt: int,
    now: datetime,
    error: JobError,
    *,
    attempts_allowed: int,
    retry: RetryPolicy,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
) -> Completion:
    """A failure that may be retried: ``retrying`` after the policy's delay, ``dead`` once attempts run out."""
    if attempt >= attempts_allowed:
        return Completion(job_id, owner, attempt, outcome, JobStatus.DEAD, now, error=error)
    run_at = now + timedelta(seconds=retry.delay_after(attempt))
    return Completion(job_id, owner, attempt, outcome, JobStatus.RETRYING, now, error=error, run_at=run_at)


def failed_for_good(job_id: int, owner: str, attempt: int, now: datetime, error: JobError) -> Completion:
    """A failure no retry can cure (``PermanentError``, arguments the handler cannot take): ``failed``."""
    return Completion(job_id, owner, attempt, AttemptOutcome.FAILED, JobStatus.FAILED, now, error=error)


def cancelled(job_id: int, owner: str, attempt: int, now: datetime) -> Completion:
    """The worker stopped the job because someone cancelled it."""
    return Completion(job_id, owner, attempt, AttemptOutcome.CANCELLED, JobStatus.CANCELLED, now)


def lease_lost(
    job_id: int, owner: str, attempt: int, now: datetime, error: JobError, *, attempts_allowed: int
) -> Completion:
    """The rescuer takes a job whose worker is gone: the attempt counts (a job that kills its
    worker every time must end somewhere), ``dead`` once attempts run out, else ``retrying``
    at once (the worker's death is no reason to wait out a backoff)."""
    status = JobStatus.DEAD if attempt >= attempts_allowed else JobStatus.RETRYING
    return Completion(job_id, owner, attempt, AttemptOutcome.LOST, status, now, error=error, run_at=now)


def released(job_id: int, owner: str, attempt: int, now: datetime) -> Completion:
    """Handed back unfinished on graceful shutdown: queued again at once, the attempt not spent."""
    return Completion(job_id, owner, attempt, AttemptOutcome.RELEASED, JobStatus.QUEUED, now, run_at=now)


# -- steering from outside a worker --------------------------------------------------


class BatchEffect(StrEnum):
    """What a change to a batch's member means for the batch, in the same transaction."""

    NONE = "none"
    #: The member may have become final (or gone): settle the batch (its continuations may fire).
    SETTLE = "settle"
    #: A member is live again: an ended batch is active again (fired continuations stay fired).
    REOPEN = "reopen"


@dataclass(frozen=True)
class JobChange:
    """A change made to jobs from outside a worker, applied only to rows in ``applies_to``."""

    name: str
    #: The stored statuses the change applies to: the write is conditional on them.
    applies_to: frozenset[JobStatus]
    #: The new status; None leaves it.
    becomes: JobStatus | None = None
    #: The row is deleted (its attempts go with it).
    deletes: bool = False
    #: ``cancel_requested`` afterwards; None leaves it.
    cancel_requested: bool | None = None
    #: One more attempt is allowed (``max_attempts = attempts + 1``), starting now.
    one_more_attempt: bool = False
    #: Members of a batch that is still active are left alone (its statistics count them), and
    #: so are the jobs of an active workflow (their results are their dependents' inputs).
    spares_active_batches: bool = False
    #: The running workers holding the changed jobs are told at once (NOTIFY where there is one).
    tells_workers: bool = False
    batch: BatchEffect = BatchEffect.NONE
    #: Why Jobstead made the change, written as the job's error (a step's ``reason``): a worker
    #: that then stops the job keeps it (a cancelled ``Completion`` carries no error).
    reason: JobError | None = None

    @property
    def ends(self) -> bool:
        """Whether the change makes the job final (``finished_at`` is set)."""
        return self.becomes is not None and self.becomes.is_final

    @property
    def revives(self) -> bool:
        """Whether the change makes a final job live again (``finished_at`` is cleared)."""
        return self.becomes is not None and not self.becomes.is_final

    def forgets(self, error: JobError | None) -> bool:
        """Whether the job's ``error`` is cleared: a job made live again forgets why it was
        cancelled (a cancel by hand later must not show the old reason). An attempt's failure
        stays: it is what happened, not a reason given for a status the job no longer has."""
        return self.revives and error is not None and error.type in CANCEL_REASONS

    def settles_batch(self, previous: JobStatus) -> bool:
        """Whether changing a member that was ``previous`` calls for settling its batch.

        Only a live member that ended or went can complete a batch. A finished
        member deleted changes nothing about whether its batch is done, and
        settling a finished batch again would recount it (``on_success`` could
        fire after ``on_failure`` did).
        """
        return self.batch is BatchEffect.SETTLE and not previous.is_final


#: A waiting job is cancelled at once (a blocked workflow step too: its dependents follow).
CANCEL = JobChange(
    "cancel",
    frozenset({*CLAIMABLE_STATUSES, JobStatus.BLOCKED}),
    becomes=JobStatus.CANCELLED,
    cancel_requested=False,
    batch=BatchEffect.SETTLE,
)
#: A running job is asked to stop; its worker ends it ``cancelled`` (a ``Completion``).
ASK_TO_STOP = JobChange("ask to stop", frozenset({JobStatus.RUNNING}), cancel_requested=True, tells_workers=True)
#: What a cancel from outside does something to: ``CANCEL`` or ``ASK_TO_STOP``.
CANCELLABLE: tuple[JobStatus, ...] = (*CLAIMABLE_STATUSES, JobStatus.RUNNING, JobStatus.BLOCKED)
#: What a retry from outside accepts: a job that ended without succeeding.
RETRYABLE: tuple[JobStatus, ...] = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)
#: A dead, failed or cancelled job is queued again with one more attempt.
RETRY = JobChange(
    "retry",
    frozenset(RETRYABLE),
    becomes=JobStatus.QUEUED,
    cancel_requested=False,
    one_more_attempt=True,
    batch=BatchEffect.REOPEN,
)
#: Any job but a running one is deleted (a running one must be cancelled first): a user's
#: decision about that job, so its batch settles without it.
DELETE = JobChange("delete", frozenset(JobStatus) - {JobStatus.RUNNING}, deletes=True, batch=BatchEffect.SETTLE)
#: Finished jobs are deleted in bulk, except members of active batches (housekeeping must not
#: change what a batch counts while it runs); a finished job settles nothing.
PURGE = JobChange("purge", FINAL_STATUSES, deletes=True, spares_active_batches=True)


# -- workflow steps ------------------------------------------------------------------
#
# A step is an ordinary job with dependencies. What it becomes when they end is
# decided here; ``store/workflows.py`` writes it, in the transaction of the change
# that ended them (a completion, a rescue, a cancel or delete from outside).


class UpstreamRule(StrEnum):
    """What a step does when a step it depends on ends without succeeding."""

    #: It is cancelled (and so is everything after it), with a reason naming that step.
    CANCEL = "cancel"
    #: It runs anyway once every dependency has ended, and sees their errors (``ctx.upstream_failures``).
    RUN = "run"


def status_at_defer(waiting: int, later: bool) -> JobStatus:
    """A new job's status: ``blocked`` while it waits for dependencies, else ``scheduled`` or ``queued``."""
    if waiting > 0:
        return JobStatus.BLOCKED
    return JobStatus.SCHEDULED if later else JobStatus.QUEUED


def release_status(due: bool) -> JobStatus:
    """What a blocked step becomes when its last dependency ends: ``queued``, or ``scheduled`` until its time."""
    return JobStatus.QUEUED if due else JobStatus.SCHEDULED


def releases(parent: JobStatus, rule: UpstreamRule) -> bool:
    """Whether a dependency that ended ``parent`` counts as done for a step with ``rule``.

    Otherwise (a failure, a death or a cancel, and the step's rule is
    ``cancel``) the step is cancelled: ``CANCEL_DOWNSTREAM``.
    """
    return parent is JobStatus.SUCCEEDED or rule is UpstreamRule.RUN


def upstream_failed(step: str, status: JobStatus) -> JobError:
    """The reason a step was cancelled for its dependency ``step``: stored as its error."""
    return JobError(
        type=JobsteadErrorType.UPSTREAM_FAILED, message=f"upstream step {step!r} ended {status.value}", traceback=""
    )


#: Why a workflow's cancel ended a step: its ``reason``.
WORKFLOW_CANCELLED = JobError(
    type=JobsteadErrorType.WORKFLOW_CANCELLED, message="the workflow was cancelled", traceback=""
)
#: The errors that are Jobstead's reasons for cancelling a step, not an attempt's failure.
CANCEL_REASONS = frozenset({JobsteadErrorType.UPSTREAM_FAILED.value, JobsteadErrorType.WORKFLOW_CANCELLED.value})


def cancel_reason(status: JobStatus, error: JobError | None) -> str | None:
    """Why a step was cancelled: a dependency that did not succeed (naming it) or its workflow's
    cancel; None for a step cancelled by hand, or not cancelled."""
    if status is JobStatus.CANCELLED and error is not None and error.type in CANCEL_REASONS:
        return error.message
    return None


def workflow_outcome(*, failed: int, cancelled: int) -> str:
    """A workflow once nothing else can run: ``failed`` if any step failed or died, else
    ``cancelled`` if any was cancelled (as a whole or by hand), else ``succeeded``."""
    if failed:
        return "failed"
    return "cancelled" if cancelled else "succeeded"


#: ``run.cancel()``: its waiting steps are cancelled and its running ones asked to stop, each
#: with the reason that its workflow was cancelled.
CANCEL_WITH_WORKFLOW = replace(CANCEL, name="cancel with its workflow", reason=WORKFLOW_CANCELLED)
STOP_WITH_WORKFLOW = replace(ASK_TO_STOP, name="stop with its workflow", reason=WORKFLOW_CANCELLED)
#: A blocked step whose dependency did not succeed (and whose rule is ``cancel``).
CANCEL_DOWNSTREAM = JobChange(
    "cancel downstream", frozenset({JobStatus.BLOCKED}), becomes=JobStatus.CANCELLED, cancel_requested=False
)
#: A step made live again by hand (``jobstead jobs retry``, ``app.retry``) while a step it depends on
#: has not ended: it waits for that one again, as at defer. Parents that did end count as ended,
#: whatever their end: it was asked to run.
WAIT_AGAIN = JobChange(
    "wait for upstream again", frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED}), becomes=JobStatus.BLOCKED
)
#: ``retry`` of a workflow: a step that ended without succeeding is waited on again...
_STEP_RETRIES = {
    # (still waits for a dependency, has run before): the change.
    (False, True): JobChange(
        "retry step", frozenset(RETRYABLE), becomes=JobStatus.QUEUED, cancel_requested=False, one_more_attempt=True
    ),
    (False, False): JobChange("retry step", frozenset(RETRYABLE), becomes=JobStatus.QUEUED, cancel_requested=False),
    (True, True): JobChange(
        "block step again",
        frozenset(RETRYABLE),
        becomes=JobStatus.BLOCKED,
        cancel_requested=False,
        one_more_attempt=True,
    ),
    (True, False): JobChange(
        "block step again", frozenset(RETRYABLE), becomes=JobStatus.BLOCKED, cancel_requested=False
    ),
}


def step_retry(*, waits: bool, ran: bool) -> JobChange:
    """A failed, dead or cancelled step in a workflow being retried: ``blocked`` again while a
    dependency is being retried too, else ``queued``; one more attempt if it had run (one
    that never ran keeps its handler's attempts)."""
    return _STEP_RETRIES[(waits, ran)]
