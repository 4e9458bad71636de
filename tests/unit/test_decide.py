"""``decide``: how one attempt's end becomes the job's next state (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobstead import PermanentError, RetryPolicy
from jobstead.cancel import CancelReason
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, HandlerDefinition
from jobstead.worker.execution import Finished
from jobstead.worker.outcome import decide

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HANDLER = HandlerDefinition(
    name="work", queue="default", priority=0, concurrency=None, max_attempts=3, retry=RetryPolicy.fixed(10), timeout=5
)


def job(attempt: int = 1, **own: object) -> ClaimedJob:
    values: dict[str, object] = {"max_attempts": None, "retry": None, "timeout": None}
    values.update(own)
    return ClaimedJob(
        1,
        "work",
        "default",
        0,
        {},
        NOW,
        NOW,
        attempt,
        values["max_attempts"],
        values["retry"],
        values["timeout"],  # type: ignore[arg-type]
        None,
        None,
        None,
    )


def test_a_success_with_nothing_to_return_is_final_and_keeps_its_worker() -> None:
    c = decide(job(), HANDLER, Finished(), owner="w", now=NOW, cancel_reason=None)
    assert (c.outcome, c.status, c.final_at, c.kept_owner, c.logged) == (
        AttemptOutcome.SUCCEEDED,
        JobStatus.SUCCEEDED,
        NOW,
        "w",
        False,
    )


def test_a_returned_value_is_the_result_and_must_be_json() -> None:
    assert decide(job(), HANDLER, Finished(value={"a": 1}), owner="w", now=NOW, cancel_reason=None).result == {"a": 1}
    c = decide(job(), HANDLER, Finished(value=object()), owner="w", now=NOW, cancel_reason=None)
    assert c.status is JobStatus.RETRYING and c.error is not None and "JSON" in c.error.message


def test_a_failure_retries_after_the_policy_delay_until_attempts_run_out() -> None:
    boom = Finished(exception=RuntimeError("boom"))
    retry = decide(job(1), HANDLER, boom, owner="w", now=NOW, cancel_reason=None)
    assert (retry.status, retry.run_at, retry.final_at, retry.logged) == (
        JobStatus.RETRYING,
        NOW + timedelta(seconds=10),
        None,
        True,
    )
    assert retry.error is not None and retry.error.type == "RuntimeError"
    dead = decide(job(3), HANDLER, boom, owner="w", now=NOW, cancel_reason=None)
    assert (dead.status, dead.final_at, dead.kept_owner) == (JobStatus.DEAD, NOW, None)


def test_the_jobs_own_settings_win_over_its_handlers() -> None:
    boom = Finished(exception=RuntimeError("boom"))
    own = job(3, max_attempts=5, retry=RetryPolicy.fixed(1))
    c = decide(own, HANDLER, boom, owner="w", now=NOW, cancel_reason=None)
    assert c.status is JobStatus.RETRYING and c.run_at == NOW + timedelta(seconds=1)


def test_a_permanent_error_fails_at_once() -> None:
    c = decide(job(1), HANDLER, Finished(exception=PermanentError("no")), owner="w", now=NOW, cancel_reason=None)
    assert (c.outcome, c.status, c.final_at) == (AttemptOutcome.FAILED, JobStatus.FAILED, NOW)


def test_a_timeout_is_its_own_outcome_and_retries() -> None:
    c = decide(job(1), HANDLER, Finished(timed_out=True), owner="w", now=NOW, cancel_reason=CancelReason.TIMED_OUT)
    assert (c.outcome, c.status) == (AttemptOutcome.TIMED_OUT, JobStatus.RETRYING)
    assert c.error is not None and "5" in c.error.message, "the handler's timeout, named"


@pytest.mark.parametrize("finished", [Finished(cancelled=True), Finished(value=1), Finished()])
def test_a_user_cancel_ends_the_job_cancelled_however_the_call_ended(finished: Finished) -> None:
    c = decide(job(), HANDLER, finished, owner="w", now=NOW, cancel_reason=CancelReason.CANCELLED)
    assert (c.outcome, c.status, c.final_at) == (AttemptOutcome.CANCELLED, JobStatus.CANCELLED, NOW)


def test_cancel_reasons_compare_with_their_plain_strings() -> None:
    assert CancelReason.CANCELLED == "cancelled" and CancelReason.SHUTDOWN == "shutdown"
