"""Timeouts per handler and per job; resources the worker injects and never stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import pytest

from jobstead import App, ConfigurationError, Context, FailureEvent, Inject, InvalidArguments, JobFailed
from jobstead.status import AttemptOutcome


def test_async_timeout_cancels_and_retries_per_policy(app: App, running_worker: Callable[..., Any]) -> None:
    cancelled = threading.Event()

    @app.handler(timeout=0.2, max_attempts=2, retry=0.05)
    async def stuck() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with running_worker(app):
        job = stuck.defer()
        with pytest.raises(JobFailed, match=r"longer than 0\.2 s") as failure:
            job.wait(15)
    assert failure.value.type == "jobstead.Timeout" and failure.value.status == "dead"
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.TIMED_OUT] * 2
    assert cancelled.is_set()


def test_sync_timeout_abandons_the_thread_and_tells_it_to_stop(app: App, running_worker: Callable[..., Any]) -> None:
    noticed = threading.Event()

    @app.handler(max_attempts=1)
    def busy(ctx: Context) -> None:
        ctx.wait_cancelled(30)
        noticed.set()

    with running_worker(app):
        job = busy.configure(timeout=0.2).defer()  # per-job timeout; the handler has none
        with pytest.raises(JobFailed, match=r"longer than 0\.2 s"):
            job.wait(10)
        assert noticed.wait(5)
    assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.TIMED_OUT]


class Clock:
    """Injected by type (declared with ``type=Clock``)."""


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


def test_resources_are_injected_not_accepted_not_stored(app: App, running_worker: Callable[..., Any]) -> None:
    mailer = Mailer()
    made: list[Mailer] = []

    def make_mailer() -> Mailer:
        made.append(mailer)
        return mailer

    app.resource("mailer", factory=make_mailer)
    app.resource("clock", Clock(), type=Clock)

    @app.handler
    def send(to: str, mail: Annotated[Mailer, Inject("mailer")], clock: Clock, ctx: Context) -> str:
        assert isinstance(clock, Clock)
        mail.sent.append(to)
        return f"{ctx.job_id}:{to}"

    with pytest.raises(InvalidArguments, match="supplied by the worker"):
        send.defer(to="a", mail=Mailer())
    with running_worker(app):
        jobs = [send.defer(to=f"user{i}") for i in range(3)]
        assert [j.wait(10) for j in jobs] == [f"{j.id}:user{i}" for i, j in enumerate(jobs)]
    assert mailer.sent == ["user0", "user1", "user2"]
    assert len(made) == 1, "a factory runs once per worker"
    assert all(set(j.refresh().record.args) == {"to"} for j in jobs)


def test_a_json_type_cannot_be_a_resource_type(app: App) -> None:
    with pytest.raises(ConfigurationError, match="job-argument type"):
        app.resource("greeting", "hello", type=str)


def test_failure_and_dead_hooks_observe_without_interfering(app: App, running_worker: Callable[..., Any]) -> None:
    failures: list[tuple[int, str, str]] = []
    dead: list[int] = []

    @app.on_failure
    def record(event: FailureEvent) -> None:
        failures.append((event.attempt, event.status.value, event.error.type))
        raise RuntimeError("a broken alerting hook")  # must not affect the job

    @app.on_dead
    async def alert(event: FailureEvent) -> None:
        assert event.final and isinstance(event.exception, KeyError)
        dead.append(event.job_id)

    @app.handler(max_attempts=2, retry=0.05)
    def lookup(key: str) -> None:
        raise KeyError(key)

    with running_worker(app):
        job = lookup.defer(key="missing")
        with pytest.raises(JobFailed):
            job.wait(10)
        deadline = time.time() + 5
        while not dead and time.time() < deadline:
            time.sleep(0.02)
    assert failures == [(1, "retrying", "KeyError"), (2, "dead", "KeyError")]
    assert dead == [job.id]


def test_a_timeout_error_the_handler_raises_is_its_own_failure(app: App, running_worker: Callable[..., Any]) -> None:
    """Only Jobstead's own deadline counts as a timeout; a TimeoutError from, say, a socket is a failure."""

    @app.handler(max_attempts=1)
    async def fetch_async() -> None:
        raise TimeoutError("upstream did not answer")

    @app.handler(max_attempts=1, timeout=30)
    def fetch_sync() -> None:
        raise TimeoutError("upstream did not answer")

    with running_worker(app):
        jobs = [fetch_async.defer(), fetch_sync.defer()]
        for job in jobs:
            with pytest.raises(JobFailed, match="upstream did not answer") as failure:
                job.wait(10)
            assert failure.value.type == "TimeoutError"
            assert [a.outcome for a in job.attempts_log()] == [AttemptOutcome.FAILED]
