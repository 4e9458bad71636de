"""Cancel, retry, delete and purge: each with one id and with many, through every door, on every driver.

The one-job operations (``store.control``) and the bulk ones (``store.bulk``,
chunks of a selection) are the same ``JobChange`` written by the same writer;
these hold them to the same results, batches included.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from jobstead.errors import InvalidState, JobError, JobNotFound
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, NewJob, Store
from jobstead.store.bulk import JobSelection, cancel_jobs, purge_jobs, retry_jobs
from tests.store.conftest import ManualClock, handler
from tests.store.test_contract import claim, done, new


def _end(store: Store, job: ClaimedJob, status: JobStatus) -> None:
    outcome = {JobStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED}.get(status, AttemptOutcome.FAILED)
    error = None if status is JobStatus.SUCCEEDED else JobError("E", "m", "")
    assert store.leases.complete([done(job, store, outcome=outcome, status=status, error=error)]) == set()


def _dead(store: Store, n: int, key: str | None = None) -> list[int]:
    """``n`` dead jobs (one attempt each)."""
    store.registry.publish_handlers([handler("work", max_attempts=1)])
    store.enqueue.insert([new(args={"n": i}, key=key) for i in range(n)])
    jobs = claim(store, limit=n)
    for job in jobs:
        _end(store, job, JobStatus.DEAD)
    return [j.id for j in jobs]


def _status(store: Store, job_id: int) -> JobStatus | None:
    record = store.queries.get_job(job_id)
    return None if record is None else record.status


def _ids(*ids: int) -> JobSelection:
    return JobSelection(ids=ids)


def _events(store: Store, batch_id: int) -> list[str]:
    return sorted(e for e, _ in store.batches.get(batch_id).continuations)


def _continuations() -> dict[str, NewJob]:
    return {event: new(f"on_{event}", args={"event": event}) for event in ("success", "finish", "failure")}


# -- cancel ------------------------------------------------------------------------------


def test_cancel_one_and_many_end_waiting_jobs_and_ask_running_ones_to_stop(store: Store) -> None:
    a, b, c, d, e = store.enqueue.insert([new(args={"n": i}, priority=9 - i) for i in range(5)])
    (running,) = claim(store, limit=1)
    assert running.id == a.id
    assert store.control.cancel(b.id).status is JobStatus.CANCELLED
    asked = store.control.cancel(a.id)
    assert asked.status is JobStatus.RUNNING and asked.cancel_requested
    assert store.control.cancel(b.id).status is JobStatus.CANCELLED, "a finished job comes back as it is"
    with pytest.raises(JobNotFound):
        store.control.cancel(10_000)
    counts = cancel_jobs(store.db, store.clock, _ids(c.id, d.id, b.id), batches=store.batches)
    assert (counts.cancelled, counts.asked_to_stop) == (2, 0)
    only_running = JobSelection(statuses=(JobStatus.RUNNING,))
    assert cancel_jobs(store.db, store.clock, only_running, batches=store.batches).asked_to_stop == 1
    assert [_status(store, j.id) for j in (a, b, c, d, e)] == [
        JobStatus.RUNNING,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.QUEUED,
    ]


# -- retry -------------------------------------------------------------------------------


def test_retry_one_and_many_queue_dead_jobs_with_one_more_attempt(store: Store) -> None:
    first, second, third = _dead(store, 3)
    again = store.control.retry(first)
    assert (again.status, again.max_attempts, again.finished_at) == (JobStatus.QUEUED, 2, None)
    with pytest.raises(InvalidState, match="only dead, failed or cancelled jobs can be retried"):
        store.control.retry(first)
    with pytest.raises(JobNotFound):
        store.control.retry(10_000)
    assert retry_jobs(store.db, store.clock, _ids(first, second, third), batches=store.batches) == 2
    assert {_status(store, i) for i in (first, second, third)} == {JobStatus.QUEUED}
    assert all(r.max_attempts == 2 for r in store.queries.list_jobs())


def test_a_retry_that_would_duplicate_a_live_key_is_refused_alone_and_skipped_in_bulk(store: Store) -> None:
    (plain,) = _dead(store, 1)
    (keyed,) = _dead(store, 1, key="k")
    store.enqueue.insert([new(key="k", args={"n": 9})])  # the key was free again, and is taken
    with pytest.raises(InvalidState, match="deduplication key"):
        store.control.retry(keyed)
    assert retry_jobs(store.db, store.clock, _ids(keyed, plain), batches=store.batches) == 1
    assert (_status(store, keyed), _status(store, plain)) == (JobStatus.DEAD, JobStatus.QUEUED)


# -- delete and purge --------------------------------------------------------------------


def test_delete_takes_any_job_but_a_running_one_and_its_attempts_go_with_it(store: Store) -> None:
    (dead,) = _dead(store, 1)
    waiting, running = store.enqueue.insert([new(args={"n": 1}), new(args={"n": 2}, priority=5)])
    claim(store, limit=1)
    assert store.control.delete(dead).id == dead and store.control.delete(waiting.id).id == waiting.id
    with pytest.raises(InvalidState, match="is running; cancel it before deleting it"):
        store.control.delete(running.id)
    with pytest.raises(JobNotFound):
        store.control.delete(dead)
    assert [_status(store, i) for i in (dead, waiting.id, running.id)] == [None, None, JobStatus.RUNNING]
    with store.db.engine.connect() as conn:
        attempts = store.tables.attempts
        assert conn.execute(select(attempts.c.job_id).where(attempts.c.job_id == dead)).all() == []


def test_purge_one_and_many_delete_finished_jobs_only(store: Store) -> None:
    dead = _dead(store, 3)
    (waiting,) = store.enqueue.insert([new(args={"n": 7})])
    assert purge_jobs(store.db, store.clock, JobSelection(statuses=(JobStatus.DEAD,), ids=(dead[0],))) == 1
    everything = JobSelection(statuses=(JobStatus.DEAD, JobStatus.QUEUED))
    assert purge_jobs(store.db, store.clock, everything, batches=store.batches) == 2, "live jobs are never purged"
    assert [_status(store, i) for i in (*dead, waiting.id)] == [None, None, None, JobStatus.QUEUED]


# -- batches, through every door ----------------------------------------------------------


@pytest.mark.parametrize("door", ["delete", "cancel", "cancel many"])
def test_the_last_unfinished_member_ending_or_going_completes_its_batch_once(store: Store, door: str) -> None:
    batch_id, (first, second) = store.batches.create(
        [new(args={"n": 1}), new(args={"n": 2})], continuations=_continuations()
    )
    (job,) = claim(store, limit=1)
    _end(store, job, JobStatus.SUCCEEDED)
    last = second if job.id == first.id else first
    assert store.batches.get(batch_id).status == "active"
    if door == "delete":
        store.control.delete(last.id)
    elif door == "cancel":
        store.control.cancel(last.id)
    else:
        cancel_jobs(store.db, store.clock, _ids(last.id), batches=store.batches)
    record = store.batches.get(batch_id)
    expected = ("succeeded", ["finish", "success"]) if door == "delete" else ("failed", ["finish"])
    assert (record.status, _events(store, batch_id)) == expected
    store.control.delete(job.id)  # a finished member going changes nothing more
    assert (store.batches.get(batch_id).status, _events(store, batch_id)) == expected


def test_a_finished_batch_is_not_counted_again_when_a_member_is_deleted_or_purged(store: Store) -> None:
    batch_id, _ = store.batches.create([new(args={"n": 1}), new(args={"n": 2})], continuations=_continuations())
    failing, succeeding = claim(store, limit=2)
    _end(store, failing, JobStatus.FAILED)
    assert purge_jobs(store.db, store.clock, _ids(failing.id), batches=store.batches) == 0, "its batch is active"
    _end(store, succeeding, JobStatus.SUCCEEDED)
    assert (store.batches.get(batch_id).status, _events(store, batch_id)) == ("failed", ["failure", "finish"])
    store.control.delete(failing.id)
    assert purge_jobs(store.db, store.clock, _ids(succeeding.id), batches=store.batches) == 1
    assert (store.batches.get(batch_id).status, _events(store, batch_id)) == ("failed", ["failure", "finish"])


def test_retrying_many_dead_members_reopens_their_batch(store: Store) -> None:
    store.registry.publish_handlers([handler("work", max_attempts=1)])
    batch_id, members = store.batches.create([new(args={"n": i}) for i in range(2)], continuations=_continuations())
    for job in claim(store, limit=2):
        _end(store, job, JobStatus.DEAD)
    assert store.batches.get(batch_id).status == "failed"
    assert retry_jobs(store.db, store.clock, _ids(*(m.id for m in members)), batches=store.batches) == 2
    assert store.batches.get(batch_id).status == "active"


def test_a_rescue_that_ends_a_member_dead_settles_its_batch(store: Store, clock: ManualClock) -> None:
    store.registry.publish_handlers([handler("work", max_attempts=1)])
    batch_id, _ = store.batches.create([new()], continuations=_continuations())
    (job,) = claim(store)
    clock.advance(31)
    assert store.leases.rescue_expired() == [job.id]
    (attempt,) = store.queries.attempts(job.id)
    assert attempt.outcome is AttemptOutcome.LOST and attempt.error is not None
    assert attempt.error.type == "jobstead.LeaseExpired"
    assert (store.batches.get(batch_id).status, _events(store, batch_id)) == ("failed", ["failure", "finish"])


def test_a_job_released_on_shutdown_is_queued_again_with_its_attempt_given_back(store: Store) -> None:
    store.enqueue.insert([new()])
    (job,) = claim(store)
    assert store.leases.release(job.id, "w1", job.attempts)
    record = store.queries.get_job(job.id)
    assert record is not None and (record.status, record.attempts, record.lease_owner) == (JobStatus.QUEUED, 0, None)
    assert [a.outcome for a in store.queries.attempts(job.id)] == [AttemptOutcome.RELEASED]
    assert not store.leases.release(job.id, "w1", job.attempts), "the lease is gone"


# -- what "the same options" means ------------------------------------------------------------


def test_jobs_differing_only_in_their_batch_event_keep_their_own(store: Store) -> None:
    """Once drifted: the single-statement insert ignored ``batch_event`` when choosing to write
    the first job's options for all (the PostgreSQL bulk insert's grouping included it)."""
    batch_id, _ = store.batches.create([])
    jobs = [new(args={"n": 1}, batch_id=batch_id, batch_event=e) for e in ("success", "finish")]
    records = store.enqueue.insert(jobs)
    assert [r.batch_event for r in records] == ["success", "finish"]
    assert [store.queries.get_job(r.id).batch_event for r in records] == ["success", "finish"]  # type: ignore[union-attr]
