"""Writing finished attempts straight through the store: exact times, lost leases, mixed batches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from jobstead import App, JobStatus
from jobstead.errors import JobError
from jobstead.status import AttemptOutcome
from jobstead.store import Completion


def _claim(app: App, worker: str, n: int) -> list[int]:
    jobs = app.store.claims.claim(worker_id=worker, handlers=["h"], queues=None, limit=n, lease_seconds=60)
    return [j.id for j in jobs]


def test_batch_keeps_every_time_to_the_microsecond_and_drops_lost_leases(app: App) -> None:
    @app.handler
    def h(n: int) -> None: ...

    h.defer_many([{"n": i} for i in range(40)])
    mine, theirs = _claim(app, "w-1", 30), _claim(app, "w-2", 10)
    rng = random.Random(7)
    base = datetime(2026, 11, 29, 6, 30, tzinfo=UTC)
    finished = {job_id: base + timedelta(microseconds=rng.randrange(10**9)) for job_id in mine + theirs}
    retry_at = base + timedelta(hours=1, microseconds=123457)
    batch = []
    for i, job_id in enumerate(mine):
        if i % 3 == 0:
            c = Completion(job_id, "w-1", 1, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, finished[job_id], {"i": i})
        elif i % 3 == 1:
            error = JobError(type="ValueError", message=f"bad {i}", traceback="tb")
            c = Completion(
                job_id, "w-1", 1, AttemptOutcome.FAILED, JobStatus.RETRYING, finished[job_id], None, error, retry_at
            )
        else:
            error = JobError(type="ValueError", message="for good", traceback="")
            c = Completion(job_id, "w-1", 1, AttemptOutcome.FAILED, JobStatus.DEAD, finished[job_id], None, error)
        batch.append(c)
    # Two workers in one call, and one completion whose lease is someone else's.
    batch += [Completion(j, "w-2", 1, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, finished[j]) for j in theirs[:-1]]
    stale = Completion(theirs[-1], "w-1", 1, AttemptOutcome.SUCCEEDED, JobStatus.SUCCEEDED, finished[theirs[-1]])
    lost = app.store.leases.complete([*batch, stale])
    assert lost == {theirs[-1]}

    for i, job_id in enumerate(mine):
        job = app.get_job(job_id).record
        log = app.get_job(job_id).attempts_log()
        assert log[-1].finished_at == finished[job_id]
        if i % 3 == 0:
            assert (job.status, job.result, job.finished_at) == (JobStatus.SUCCEEDED, {"i": i}, finished[job_id])
            assert log[-1].worker_id == "w-1" and log[-1].outcome is AttemptOutcome.SUCCEEDED
        elif i % 3 == 1:
            assert (job.status, job.run_at, job.finished_at) == (JobStatus.RETRYING, retry_at, None)
            assert job.error is not None and job.error.message == f"bad {i}"
        else:
            assert job.status is JobStatus.DEAD and job.finished_at == finished[job_id]
    assert app.get_job(theirs[-1]).status is JobStatus.RUNNING  # w-2 still holds it


def test_renewal_touches_only_the_jobs_the_worker_names(app: App) -> None:
    @app.handler
    def h(n: int) -> None: ...

    h.defer_many([{"n": i} for i in range(3)])
    a, b, c = _claim(app, "w-1", 3)
    before = {j: app.get_job(j).record.lease_expires_at for j in (a, b, c)}
    app.get_job(b).cancel()  # a running job: cancellation is requested, it keeps running
    report = app.store.leases.renew("w-1", 3600, [a, b])
    assert report.held == {a, b} and report.cancel_requested == {b}
    after = {j: app.get_job(j).record.lease_expires_at for j in (a, b, c)}
    assert after[a] > before[a] and after[b] > before[b] and after[c] == before[c]  # type: ignore[operator]
    assert app.store.leases.renew("w-1", 3600, []).held == frozenset()
    assert app.store.leases.renew("w-2", 3600, [a]).held == frozenset()  # not w-2's lease
    assert app.store.leases.renew("w-1", 3600).held == {a, b, c}  # no ids: every lease it holds
