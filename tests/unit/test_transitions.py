"""``jobstead.transitions``: every change of a job's status, against the pure module (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobstead import RetryPolicy
from jobstead.errors import JobError
from jobstead.status import CLAIMABLE_STATUSES, FINAL_STATUSES, LIVE_STATUSES, AttemptOutcome, JobStatus
from jobstead.store.crons import FireOutcome, SkipReason
from jobstead.transitions import (
    ASK_TO_STOP,
    CANCEL,
    CANCEL_DOWNSTREAM,
    CANCEL_WITH_WORKFLOW,
    CANCELLABLE,
    DELETE,
    PURGE,
    RETRY,
    RETRYABLE,
    STOP_WITH_WORKFLOW,
    WAIT_AGAIN,
    WORKFLOW_CANCELLED,
    BatchEffect,
    Completion,
    JobsteadErrorType,
    UpstreamRule,
    cancel_reason,
    cancelled,
    failed,
    failed_for_good,
    lease_lost,
    release_status,
    released,
    releases,
    shown_status,
    status_at_defer,
    step_retry,
    succeeded,
    upstream_failed,
    workflow_outcome,
)
from tests.unit.test_layering import PACKAGE, imports

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BOOM = JobError(type="RuntimeError", message="boom", traceback="")


def row_of(c: Completion) -> tuple[object, ...]:
    """What a driver writes for a completion: every value read off it, none worked out again."""
    return (
        c.status,
        c.final_at,
        c.kept_owner,
        c.keeps_result,
        c.logged,
        c.spends_attempt,
        c.run_at,
    )


# -- the end of an attempt ---------------------------------------------------------


def test_a_success_is_final_keeps_its_worker_and_result_and_needs_no_attempt_row() -> None:
    c = succeeded(1, "w", 2, NOW, {"ok": True})
    assert c.outcome is AttemptOutcome.SUCCEEDED and c.result == {"ok": True}
    assert row_of(c) == (JobStatus.SUCCEEDED, NOW, "w", True, False, True, None)


def test_a_failure_retries_after_the_policy_delay_until_attempts_run_out() -> None:
    retry = failed(1, "w", 1, NOW, BOOM, attempts_allowed=3, retry=RetryPolicy.fixed(10))
    assert row_of(retry) == (JobStatus.RETRYING, None, None, False, True, True, NOW + timedelta(seconds=10))
    dead = failed(1, "w", 3, NOW, BOOM, attempts_allowed=3, retry=RetryPolicy.fixed(10))
    assert row_of(dead) == (JobStatus.DEAD, NOW, None, False, True, True, None)
    assert dead.error is BOOM


def test_a_timeout_keeps_its_own_outcome() -> None:
    c = failed(1, "w", 1, NOW, BOOM, attempts_allowed=3, retry=RetryPolicy.fixed(1), outcome=AttemptOutcome.TIMED_OUT)
    assert (c.outcome, c.status) == (AttemptOutcome.TIMED_OUT, JobStatus.RETRYING)


def test_a_failure_for_good_is_failed_at_once_whatever_attempts_are_left() -> None:
    c = failed_for_good(1, "w", 1, NOW, BOOM)
    assert (c.outcome, *row_of(c)) == (AttemptOutcome.FAILED, JobStatus.FAILED, NOW, None, False, True, True, None)


def test_a_cancel_the_worker_honoured_ends_the_job_cancelled() -> None:
    c = cancelled(1, "w", 1, NOW)
    assert (c.outcome, *row_of(c)) == (
        AttemptOutcome.CANCELLED,
        JobStatus.CANCELLED,
        NOW,
        None,
        False,
        True,
        True,
        None,
    )


def test_a_lost_lease_counts_the_attempt_and_retries_at_once_until_attempts_run_out() -> None:
    gone = JobError(type=JobsteadErrorType.LEASE_EXPIRED, message="worker w stopped", traceback="")
    again = lease_lost(1, "w", 1, NOW, gone, attempts_allowed=2)
    assert (again.outcome, *row_of(again)) == (
        AttemptOutcome.LOST,
        JobStatus.RETRYING,
        None,
        None,
        False,
        True,
        True,
        NOW,
    )
    dead = lease_lost(1, "w", 2, NOW, gone, attempts_allowed=2)
    assert (dead.status, dead.final_at, dead.error) == (JobStatus.DEAD, NOW, gone)


def test_a_job_released_on_shutdown_is_queued_at_once_and_its_attempt_not_spent() -> None:
    c = released(1, "w", 1, NOW)
    assert (c.outcome, *row_of(c)) == (AttemptOutcome.RELEASED, JobStatus.QUEUED, None, None, False, True, False, NOW)


def test_jobsteads_own_error_types_are_the_strings_users_see() -> None:
    assert [t.value for t in JobsteadErrorType] == [
        "jobstead.Timeout",
        "jobstead.LeaseExpired",
        "jobstead.WorkerGone",
        "jobstead.UpstreamFailed",
        "jobstead.WorkflowCancelled",
    ]
    assert [t.lost_lease for t in JobsteadErrorType] == [False, True, True, False, False]
    assert JobError(type=JobsteadErrorType.TIMEOUT, message="", traceback="").to_json()["type"] == "jobstead.Timeout"


# -- steering from outside a worker ------------------------------------------------


def test_cancel_ends_waiting_jobs_and_asks_running_ones_to_stop() -> None:
    assert CANCEL.applies_to == {JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.BLOCKED}
    assert (CANCEL.becomes, CANCEL.ends, CANCEL.cancel_requested, CANCEL.batch) == (
        JobStatus.CANCELLED,
        True,
        False,
        BatchEffect.SETTLE,
    )
    assert ASK_TO_STOP.applies_to == {JobStatus.RUNNING}
    assert (ASK_TO_STOP.becomes, ASK_TO_STOP.cancel_requested, ASK_TO_STOP.tells_workers) == (None, True, True)
    assert not ASK_TO_STOP.settles_batch(JobStatus.RUNNING), "its worker's completion settles the batch"
    assert not (CANCEL.applies_to & ASK_TO_STOP.applies_to) and not (CANCEL.applies_to & FINAL_STATUSES)
    assert set(CANCELLABLE) == CANCEL.applies_to | ASK_TO_STOP.applies_to


def test_retry_from_dead_queues_a_job_that_ended_badly_with_one_more_attempt() -> None:
    assert RETRY.applies_to == {JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED}
    assert (RETRY.becomes, RETRY.revives, RETRY.ends, RETRY.one_more_attempt, RETRY.cancel_requested) == (
        JobStatus.QUEUED,
        True,
        False,
        True,
        False,
    )
    assert RETRY.batch is BatchEffect.REOPEN


def test_delete_takes_anything_but_a_running_job_and_settles_a_batch_only_for_a_live_member() -> None:
    assert DELETE.deletes and DELETE.applies_to == set(JobStatus) - {JobStatus.RUNNING}
    assert all(DELETE.settles_batch(s) for s in LIVE_STATUSES), "the last unfinished member gone completes it"
    assert not any(DELETE.settles_batch(s) for s in FINAL_STATUSES), "a finished batch is not counted again"
    assert not DELETE.spares_active_batches


def test_purge_takes_finished_jobs_only_spares_active_batches_and_settles_nothing() -> None:
    assert PURGE.deletes and PURGE.applies_to == FINAL_STATUSES and PURGE.spares_active_batches
    assert not any(PURGE.settles_batch(s) for s in JobStatus)


@pytest.mark.parametrize(
    ("stored", "due", "shown"),
    [
        ("scheduled", True, JobStatus.QUEUED),
        ("scheduled", False, JobStatus.SCHEDULED),
        ("queued", False, JobStatus.QUEUED),
        ("retrying", True, JobStatus.RETRYING),
        ("dead", True, JobStatus.DEAD),
    ],
)
def test_a_scheduled_job_whose_time_has_come_shows_as_queued(stored: str, due: bool, shown: JobStatus) -> None:
    assert shown_status(stored, due) is shown


def test_the_transitions_module_is_pure() -> None:
    """Importable by the store and the worker alike: value types only, nothing of a database."""
    imported = {name for _, name in imports(PACKAGE / "transitions.py") if name != "__future__"}
    value_types = {"jobstead.errors", "jobstead.retry", "jobstead.status"}
    assert imported <= {"dataclasses", "datetime", "enum", "typing", *value_types}


# -- cron reasons ------------------------------------------------------------------


def test_fire_outcomes_and_skip_reasons_are_the_strings_they_were() -> None:
    assert [o.value for o in FireOutcome] == ["fired", "overlap", "duplicate", "stale"]
    assert [o for o in FireOutcome if o.handled_here] == [FireOutcome.FIRED, FireOutcome.OVERLAP]
    assert [r.value for r in SkipReason] == ["deadline", "overlap"]
    assert FireOutcome("stale") is FireOutcome.STALE and SkipReason("deadline") is SkipReason.DEADLINE


# -- workflow steps --------------------------------------------------------------------


def test_a_step_waits_blocked_then_is_released_queued_or_scheduled() -> None:
    assert status_at_defer(2, later=False) is JobStatus.BLOCKED
    assert status_at_defer(0, later=False) is JobStatus.QUEUED
    assert status_at_defer(0, later=True) is JobStatus.SCHEDULED
    assert release_status(True) is JobStatus.QUEUED and release_status(False) is JobStatus.SCHEDULED
    assert JobStatus.BLOCKED not in CLAIMABLE_STATUSES and not JobStatus.BLOCKED.is_final


def test_a_dependency_that_did_not_succeed_releases_only_a_step_that_runs_anyway() -> None:
    assert releases(JobStatus.SUCCEEDED, UpstreamRule.CANCEL) and releases(JobStatus.SUCCEEDED, UpstreamRule.RUN)
    for ended in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED):
        assert not releases(ended, UpstreamRule.CANCEL) and releases(ended, UpstreamRule.RUN)
    assert CANCEL_DOWNSTREAM.applies_to == {JobStatus.BLOCKED} and CANCEL_DOWNSTREAM.becomes is JobStatus.CANCELLED
    reason = upstream_failed("charge", JobStatus.DEAD)
    assert reason.type == "jobstead.UpstreamFailed"
    assert cancel_reason(JobStatus.CANCELLED, reason) == "upstream step 'charge' ended dead"
    assert cancel_reason(JobStatus.BLOCKED, reason) is None  # blocked again by a retry: no reason
    assert cancel_reason(JobStatus.CANCELLED, None) is None  # cancelled by hand


def test_a_workflows_cancel_gives_its_steps_a_reason_that_a_revival_forgets() -> None:
    assert (CANCEL_WITH_WORKFLOW.applies_to, CANCEL_WITH_WORKFLOW.becomes) == (CANCEL.applies_to, CANCEL.becomes)
    assert STOP_WITH_WORKFLOW.applies_to == ASK_TO_STOP.applies_to and STOP_WITH_WORKFLOW.tells_workers
    for change in (CANCEL_WITH_WORKFLOW, STOP_WITH_WORKFLOW):
        assert change.reason == WORKFLOW_CANCELLED and change.reason.type == "jobstead.WorkflowCancelled"
    assert cancel_reason(JobStatus.CANCELLED, WORKFLOW_CANCELLED) == "the workflow was cancelled"
    assert CANCEL.reason is None and ASK_TO_STOP.reason is None, "a cancel by hand gives no reason"
    upstream = upstream_failed("charge", JobStatus.FAILED)
    failure = JobError("ValueError", "bad", "tb")
    for change in (RETRY, WAIT_AGAIN, step_retry(waits=True, ran=False), step_retry(waits=False, ran=True)):
        assert change.forgets(upstream) and change.forgets(WORKFLOW_CANCELLED), change.name
        assert not change.forgets(failure) and not change.forgets(None), "an attempt's failure stays"
    assert not CANCEL.forgets(upstream) and not DELETE.forgets(upstream)


def test_a_workflow_is_failed_before_cancelled_before_succeeded() -> None:
    assert workflow_outcome(failed=1, cancelled=3) == "failed"
    assert workflow_outcome(failed=0, cancelled=1) == "cancelled"
    assert workflow_outcome(failed=0, cancelled=0) == "succeeded"


def test_a_retried_step_is_blocked_while_a_dependency_is_retried_and_gets_one_more_attempt_if_it_ran() -> None:
    again = step_retry(waits=True, ran=True)
    assert (again.becomes, again.one_more_attempt, again.applies_to) == (JobStatus.BLOCKED, True, frozenset(RETRYABLE))
    assert step_retry(waits=True, ran=False).one_more_attempt is False
    assert step_retry(waits=False, ran=True).becomes is JobStatus.QUEUED
    assert step_retry(waits=False, ran=False).revives and not step_retry(waits=False, ran=False).one_more_attempt
