"""A real worker against each backend: running, retrying, ordering, leaving others' jobs alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from jobstead import App, Context, Deferred, FailureEvent, JobFailed, JobStatus, PermanentError, RetryPolicy
from jobstead.retry import DEFAULT_RETRY
from jobstead.signature import HandlerSignature
from jobstead.status import AttemptOutcome
from jobstead.store import HandlerDefinition, NewJob, Store
from jobstead.worker import Worker, WorkerEnvironment, WorkerOptions
from tests.conftest import FAST, Target


def test_sync_and_async_handlers_run_and_return_results(app: App, running_worker: Callable[..., Any]) -> None:
    @app.handler
    def add(a: int, b: int) -> int:
        return a + b

    @app.handler
    async def greet(name: str, ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"hello": name, "job": ctx.job_id, "attempt": ctx.attempt}

    with running_worker(app, concurrency=4):
        a = add.defer(a=2, b=3)
        g = greet.defer(name="ada")
        assert a.wait(10) == 5
        assert g.wait(10) == {"hello": "ada", "job": g.id, "attempt": 1}
    assert a.refresh().status is JobStatus.SUCCEEDED
    assert [x.outcome for x in a.attempts_log()] == [AttemptOutcome.SUCCEEDED]


def test_every_attempt_is_logged_with_its_worker_and_times(app: App, running_worker: Callable[..., Any]) -> None:
    """A failure has its own attempt row; the final success lives in the job row and reads back the same way."""
    calls: list[int] = []

    @app.handler(max_attempts=3, retry=0.05)
    def flaky(ctx: Context) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return "ok"

    with running_worker(app) as worker:
        job = flaky.defer()
        assert job.wait(10) == "ok"
    log = job.attempts_log()
    assert [(a.attempt, a.outcome) for a in log] == [(1, AttemptOutcome.FAILED), (2, AttemptOutcome.SUCCEEDED)]
    assert all(a.worker_id == worker.id for a in log)
    assert all(a.started_at is not None and a.started_at <= a.finished_at for a in log)
    assert log[0].finished_at <= log[1].started_at  # type: ignore[operator]
    assert log[0].error is not None and log[0].error.type == "ConnectionError" and log[1].error is None
    assert job.refresh().record.to_json()["worker"] == worker.id


def test_a_slow_sync_handler_does_not_stall_async_ones(app: App, running_worker: Callable[..., Any]) -> None:
    release = threading.Event()

    @app.handler
    def slow() -> str:
        release.wait(20)
        return "slow done"

    @app.handler
    async def quick(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    with running_worker(app, concurrency=12):
        s = slow.defer()
        quick_jobs = [quick.defer(i=i) for i in range(10)]
        assert [j.wait(10) for j in quick_jobs] == list(range(10))
        assert s.refresh().status is JobStatus.RUNNING  # still blocked, and nothing waited for it
        release.set()
        assert s.wait(10) == "slow done"


@pytest.mark.parametrize(
    ("policy", "expected_gaps"),
    [
        (RetryPolicy.fixed(0.3), [0.3, 0.3]),
        (RetryPolicy.explicit([0.2, 0.6]), [0.2, 0.6]),
        (RetryPolicy.exponential(0.2, cap=0.5, jitter=0.0), [0.2, 0.4]),
    ],
)
def test_retries_follow_the_delay_policy_then_the_job_is_dead(
    app: App, running_worker: Callable[..., Any], policy: RetryPolicy, expected_gaps: list[float]
) -> None:
    @app.handler(max_attempts=3, retry=policy)
    def flaky(n: int) -> None:
        raise ConnectionError(f"upstream down ({n})")

    with running_worker(app, poll_interval=0.05):
        job = flaky.defer(n=7)
        with pytest.raises(JobFailed) as failure:
            job.wait(15)
    assert failure.value.status == "dead"
    assert failure.value.type == "ConnectionError"
    assert failure.value.message == "upstream down (7)"
    assert "raise ConnectionError" in failure.value.traceback
    job.refresh()
    assert job.status is JobStatus.DEAD and job.attempts == 3
    assert job.error is not None and job.error.type == "ConnectionError"
    log = job.attempts_log()
    assert [a.outcome for a in log] == [AttemptOutcome.FAILED] * 3
    gaps = [(log[i + 1].started_at - log[i].finished_at).total_seconds() for i in range(2)]  # type: ignore[operator]
    for gap, expected in zip(gaps, expected_gaps, strict=True):
        assert expected <= gap < expected + 0.6, (gaps, expected_gaps)


def test_per_job_retry_settings_override_the_handler(app: App, running_worker: Callable[..., Any]) -> None:
    @app.handler(max_attempts=5, retry=0.01)
    def fails() -> None:
        raise RuntimeError("no")

    with running_worker(app):
        job = fails.configure(max_attempts=1).defer()
        with pytest.raises(JobFailed):
            job.wait(10)
    assert job.refresh().attempts == 1


def test_permanent_error_fails_without_retry(app: App, running_worker: Callable[..., Any]) -> None:
    @app.handler(max_attempts=5)
    def invalid(order: int) -> None:
        raise PermanentError(f"order {order} does not exist")

    with running_worker(app):
        job = invalid.defer(order=9)
        with pytest.raises(JobFailed, match="order 9 does not exist") as failure:
            job.wait(10)
    assert failure.value.status == "failed"
    assert job.refresh().attempts == 1


def test_unknown_handlers_are_left_untouched(make_app: Callable[..., App], running_worker: Callable[..., Any]) -> None:
    producer = make_app()

    @producer.handler
    def elsewhere(x: int) -> None: ...

    @producer.handler
    def mine(x: int) -> int:
        return x

    other = producer.get_handler("elsewhere").defer(x=1)
    consumer = make_app()

    @consumer.handler(name="mine")
    def mine_here(x: int) -> int:
        return x * 10

    with running_worker(consumer):
        own = producer.get_handler("mine").defer(x=4)
        assert own.wait(10) == 40
        time.sleep(0.3)  # several poll rounds
    other.refresh()
    assert other.status is JobStatus.QUEUED and other.attempts == 0 and other.error is None
    assert other.attempts_log() == []


def test_delayed_jobs_never_start_early(app: App, running_worker: Callable[..., Any]) -> None:
    started: dict[int, float] = {}

    @app.handler
    def stamp(ctx: Context) -> None:
        started[ctx.job_id] = time.time()

    with running_worker(app, poll_interval=0.05):
        deferred_at = time.time()
        jobs = {d: stamp.configure(delay=timedelta(seconds=d)).defer() for d in (0.5, 1.0)}
        assert jobs[0.5].status is JobStatus.SCHEDULED
        for job in jobs.values():
            job.wait(10)
    for delay, job in jobs.items():
        assert started[job.id] >= deferred_at + delay


def test_priority_then_run_at_within_a_queue(app: App, running_worker: Callable[..., Any]) -> None:
    order: list[str] = []

    @app.handler
    def record(label: str) -> None:
        order.append(label)

    record.configure(priority=0).defer(label="low-1")
    record.configure(priority=10).defer(label="high")
    record.configure(priority=0).defer(label="low-2")
    record.configure(priority=5).defer(label="mid")
    with running_worker(app, concurrency=1):
        for job in app.store.queries.list_jobs():
            app.get_job(job.id).wait(10)
    assert order == ["high", "mid", "low-1", "low-2"]


def test_queues_are_served_in_the_order_given(app: App, running_worker: Callable[..., Any]) -> None:
    order: list[str] = []

    @app.handler
    def record(label: str) -> None:
        order.append(label)

    record.configure(queue="bulk", priority=100).defer(label="bulk")
    record.configure(queue="urgent").defer(label="urgent")
    record.configure(queue="ignored").defer(label="ignored")
    with running_worker(app, concurrency=1, queues=["urgent", "bulk"]):
        deadline = time.time() + 10
        while len(order) < 2 and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    assert order == ["urgent", "bulk"]


def test_stored_arguments_that_no_longer_fit_fail_permanently(
    make_app: Callable[..., App], running_worker: Callable[..., Any]
) -> None:
    old = make_app()

    @old.handler(name="resize")
    def resize_v1(path: str) -> None: ...

    job = old.get_handler("resize").defer(path="a.png")
    new = make_app()

    @new.handler(name="resize")
    def resize_v2(path: str, width: int) -> None: ...

    with running_worker(new), pytest.raises(JobFailed, match="missing a required argument: 'width'") as failure:
        new.get_job(job.id).wait(10)
    assert failure.value.status == "failed"  # at once, though the handler allows 5 attempts
    assert failure.value.type == "jobstead.InvalidArguments"  # ArgumentsDoNotFit, by its public name
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.FAILED]


def test_result_that_is_not_json_is_an_error(app: App, running_worker: Callable[..., Any]) -> None:
    @app.handler(max_attempts=1)
    def bad() -> object:
        return object()

    with running_worker(app), pytest.raises(JobFailed, match="not JSON-serialisable"):
        bad.defer().wait(10)


@dataclass
class _PlainHandler:
    """A handler that no app registered: the worker needs only its code and defaults."""

    name: str
    func: Callable[..., Any]
    is_async: bool = False

    @property
    def signature(self) -> HandlerSignature:
        return HandlerSignature.of(self.func, self.name, {})

    def definition(self) -> HandlerDefinition:
        return HandlerDefinition(
            name=self.name,
            queue="default",
            priority=0,
            concurrency=None,
            max_attempts=1,
            retry=DEFAULT_RETRY,
            timeout=None,
        )


def test_a_worker_runs_jobs_of_a_store_without_an_app(target: Target) -> None:
    """``Worker(environment, options)``: a store, handlers and hooks are all a worker is given."""
    store = Store.connect(target.url, schema=target.schema)
    store.ensure_schema()
    failures: list[FailureEvent] = []
    environment = WorkerEnvironment(
        open_store=lambda: store,
        publish_crons=lambda: None,
        is_transient=lambda _exc: False,
        handlers={"double": _PlainHandler("double", lambda n: 2 * n), "refuse": _PlainHandler("refuse", _refuse)},
        crons=[],
        resources={},
        failure_hooks=[failures.append],
        dead_hooks=[],
        retention=None,
        dead_retention=None,
    )
    worker = Worker(environment, WorkerOptions(**FAST))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.started.wait(30)
        doubled, refused = store.enqueue.insert(
            [
                NewJob(handler="double", args={"n": 21}, queue="default"),
                NewJob(handler="refuse", args={}, queue="default"),
            ]
        )
        assert Deferred(store, doubled).wait(10) == 42
        with pytest.raises(JobFailed, match="no"):
            Deferred(store, refused).wait(10)
        assert [event.job_id for event in failures] == [refused.id]
    finally:
        worker.stop()
        thread.join(30)
        store.close()
    assert not thread.is_alive()


def _refuse() -> None:
    raise ValueError("no")


def test_a_lease_renewal_judges_only_the_jobs_it_asked_about(app: App, running_worker: Callable[..., Any]) -> None:
    """Regression: a renewal could read the held list while a job was between the buffer and its slot
    (stamped as started, in neither yet), and since it was stamped before the renewal began, the
    renewal's answer without it stopped it as "lease lost" with its lease intact; it ran again only
    once the lease expired (a live worker's attempt logged as lost, under kill -9 tests on 2 cores)."""
    from jobstead.services.lease_renewer import LeaseRenewer

    started, release = threading.Event(), threading.Event()

    @app.handler
    def long(ctx: Context) -> str:
        started.set()
        release.wait(10)
        return "stopped" if ctx.cancelled else "done"

    with running_worker(app) as worker:
        job = long.defer()
        assert started.wait(10)
        # A renewal whose read of the held list missed the job: the interleaving above, made certain.
        renewal = LeaseRenewer(
            app.store,
            worker.id,
            every=60,
            lease_seconds=30,
            held=lambda: (),
            on_report=worker._report_from_thread,
        )
        renewal.run_once()
        time.sleep(0.3)  # the report is applied on the worker's loop
        release.set()
        assert job.wait(10) == "done"
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.SUCCEEDED]
