"""Crons end to end through the store and the scheduler, on SQLite and PostgreSQL.

Time is a fake clock handed to the app (store and scheduler alike): days of
fire times pass in milliseconds, and no test waits for a real minute except
the two that prove the run loop keeps time with the real clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text, update

from jobstead import App, Context, JobStatus
from jobstead.cron import CronSchedule, InvalidSchedule
from jobstead.cron.scheduler import Scheduler
from jobstead.migrations import downgrade, upgrade
from jobstead.store import CronDefinition, JobFilter, JobRecord, Store
from jobstead.store.records import CONCURRENCY_POLICIES

TALLINN = "Europe/Tallinn"
NEW_YORK = "America/New_York"
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday, in the past: jobs are due when deferred


class FakeClock:
    """A clock that moves only when told to; shared by every app and scheduler of a test."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.at

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self.at += timedelta(**delta)
            return self.at

    def set(self, at: datetime) -> None:
        with self._lock:
            self.at = at


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def scheduler(app: App, **options: object) -> Scheduler:
    return app.scheduler(install_signal_handlers=False, **options)


def cron_jobs(app: App, cron: str) -> list[tuple[datetime, JobRecord]]:
    """The jobs a cron deferred, by fire time (which the job's metadata carries)."""
    jobs = app.store.queries.list_jobs(JobFilter(limit=100_000))
    found = [
        (datetime.fromisoformat(j.metadata["cron_fire_at"]), j)
        for j in jobs
        if j.metadata and j.metadata.get("cron") == cron
    ]
    return sorted(found, key=lambda pair: pair[0])


def fire_times(app: App, cron: str) -> list[datetime]:
    return [fire for fire, _ in cron_jobs(app, cron)]


def wall(instants: list[datetime], zone: str) -> list[str]:
    return [i.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M:%S%z") for i in instants]


def set_status(store: Store, job_id: int, status: JobStatus) -> None:
    """End or park a job as a worker would have (the tests need no worker for that)."""
    jobs = store.tables.jobs
    with store.db.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(status=status.value))


@contextlib.contextmanager
def running(s: Scheduler) -> Iterator[Scheduler]:
    """The scheduler's real loop on a thread, as a process runs it."""
    thread = threading.Thread(target=s.run, name="test-scheduler", daemon=True)
    thread.start()
    assert s.started.wait(30), "scheduler did not start"
    try:
        yield s
    finally:
        s.stop()
        thread.join(30)
        assert not thread.is_alive(), "scheduler did not stop"


# -- exactly once ----------------------------------------------------------------


def test_three_schedulers_defer_exactly_one_job_per_fire_time(make_app: Callable[..., App], clock: FakeClock) -> None:
    apps = []
    for _ in range(3):  # three processes' worth: each its own app, store and connection pool
        app = make_app(clock=clock)

        @app.cron("* * * * * */10", name="every_10s")
        @app.cron("* * * * *", timezone=TALLINN, name="every_minute")
        def tick(ctx: Context) -> None: ...

        app.publish_crons()
        apps.append(app)
    schedulers = [scheduler(a) for a in apps]
    created = clock()
    fired = []
    with ThreadPoolExecutor(len(schedulers)) as pool:
        for _ in range(200):
            clock.advance(seconds=7)
            for report in pool.map(lambda s: s.tick(), schedulers):
                fired.extend(report.fired)

    for name, schedule in (("every_10s", "* * * * * */10"), ("every_minute", "* * * * *")):
        expected = list(CronSchedule.parse(schedule, TALLINN).fires_after(created, until=clock()))
        assert len(expected) > 20
        assert fire_times(apps[0], name) == expected  # every fire time, each exactly once
    assert (
        len(fired)
        == len({f.job_id for f in fired})
        == len(cron_jobs(apps[0], "every_10s")) + len(cron_jobs(apps[0], "every_minute"))
    )
    cron = apps[0].store.crons.get("every_10s")
    assert cron is not None and cron.last_fire_at == fire_times(apps[0], "every_10s")[-1]
    assert cron.last_job_id == cron_jobs(apps[0], "every_10s")[-1][1].id
    assert cron.next_fire_at == CronSchedule.parse("* * * * * */10").next_after(cron.last_fire_at)


def test_the_unique_key_decides_even_when_a_fire_time_comes_round_again(
    make_app: Callable[..., App], clock: FakeClock
) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *")
    def minutely() -> None: ...

    app.publish_crons()
    store = app.store
    fire_at = clock.advance(minutes=1)
    first = store.crons.fire("minutely", fire_at, schedule="* * * * *", timezone="UTC")
    assert first.outcome == "fired" and first.job_id is not None
    assert store.crons.fire("minutely", fire_at, schedule="* * * * *", timezone="UTC").outcome == "stale"
    crons = store.tables.crons
    with store.db.engine.begin() as conn:  # as if handled_until went back (a clock stepped back)
        conn.execute(update(crons).values(handled_until=START))
    again = store.crons.fire("minutely", fire_at, schedule="* * * * *", timezone="UTC")
    assert again.outcome == "duplicate" and again.previous_job_id == first.job_id
    assert [j.id for _, j in cron_jobs(app, "minutely")] == [first.job_id]
    # A fire computed from a schedule that has changed since does nothing.
    later = clock.advance(minutes=1)
    assert store.crons.fire("minutely", later, schedule="*/5 * * * *", timezone="UTC").outcome == "stale"


# -- DST, through the scheduler --------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "schedule", "start", "end", "step", "expected"),
    [
        pytest.param(
            TALLINN,
            "30 3 * * *",
            datetime(2025, 3, 29, tzinfo=UTC),
            datetime(2025, 3, 31, 6, tzinfo=UTC),
            timedelta(minutes=20),
            ["03-29 03:30:00+0200", "03-30 04:00:00+0300", "03-31 03:30:00+0300"],
            id="tallinn-spring-forward-daily",
        ),
        pytest.param(
            TALLINN,
            "0 * * * *",
            datetime(2025, 3, 29, 23, 30, tzinfo=UTC),
            datetime(2025, 3, 30, 3, 30, tzinfo=UTC),
            timedelta(minutes=10),
            ["03-30 02:00:00+0200", "03-30 04:00:00+0300", "03-30 05:00:00+0300", "03-30 06:00:00+0300"],
            id="tallinn-spring-forward-hourly",
        ),
        pytest.param(
            TALLINN,
            "0 * * * *",
            datetime(2025, 10, 25, 23, 30, tzinfo=UTC),
            datetime(2025, 10, 26, 4, 30, tzinfo=UTC),
            timedelta(minutes=10),
            ["10-26 03:00:00+0300", "10-26 04:00:00+0200", "10-26 05:00:00+0200", "10-26 06:00:00+0200"],
            id="tallinn-fall-back-hourly",
        ),
        pytest.param(
            TALLINN,
            "30 3 * * *",
            datetime(2025, 10, 25, tzinfo=UTC),
            datetime(2025, 10, 27, 6, tzinfo=UTC),
            timedelta(minutes=20),
            ["10-25 03:30:00+0300", "10-26 03:30:00+0300", "10-27 03:30:00+0200"],
            id="tallinn-fall-back-daily",
        ),
        pytest.param(
            NEW_YORK,
            "30 2 * * *",
            datetime(2025, 3, 8, tzinfo=UTC),
            datetime(2025, 3, 10, 12, tzinfo=UTC),
            timedelta(minutes=20),
            ["03-08 02:30:00-0500", "03-09 03:00:00-0400", "03-10 02:30:00-0400"],
            id="new-york-spring-forward",
        ),
        pytest.param(
            NEW_YORK,
            "*/30 1 * * *",
            datetime(2025, 11, 2, 4, tzinfo=UTC),
            datetime(2025, 11, 2, 8, tzinfo=UTC),
            timedelta(minutes=10),
            ["11-02 01:00:00-0400", "11-02 01:30:00-0400"],
            id="new-york-fall-back",
        ),
    ],
)
def test_dst_changes_neither_double_nor_drop_a_fire(
    make_app: Callable[..., App],
    zone: str,
    schedule: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    expected: list[str],
) -> None:
    clock = FakeClock(start)
    apps = [make_app(clock=clock) for _ in range(2)]
    for app in apps:
        app.cron(schedule, timezone=zone, name="local_time", handler=app.handler(lambda: None, name="work"))
        app.publish_crons()
    schedulers = [scheduler(a) for a in apps]
    while clock() < end:
        clock.advance(seconds=step.total_seconds())
        for s in schedulers:
            s.tick()
    assert wall(fire_times(apps[0], "local_time"), zone) == expected


# -- missed fires ------------------------------------------------------------------


def test_missed_fires_found_at_start_are_said_calmly(
    make_app: Callable[..., App], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A second start (make run after a pause) catches up once and says so at info, not as a warning."""
    app = make_app(clock=clock)

    @app.cron("* * * * *")
    def minutely() -> None: ...

    scheduler(app).tick()
    app.publish_crons()
    clock.advance(minutes=1)
    scheduler(app).tick()
    clock.advance(minutes=61)  # down for an hour
    with caplog.at_level(logging.INFO, logger="jobstead.scheduler"):
        assert len(scheduler(app).tick().fired) == 1  # a new process: its first pass
    missed = [r for r in caplog.records if "missed" in r.getMessage()]
    assert missed and all(r.levelno == logging.INFO for r in missed)


def test_a_scheduler_down_for_three_fire_times_runs_one_catch_up(
    make_app: Callable[..., App], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *")
    @app.cron("* * * * *", name="with_deadline", starting_deadline=30)
    def minutely() -> None: ...

    s = scheduler(app)
    app.publish_crons()
    clock.advance(minutes=1)
    assert sorted(f.cron for f in s.tick().fired) == ["minutely", "with_deadline"]

    clock.advance(minutes=3, seconds=45)  # down: the fires at +2, +3 and +4 min pass unseen
    with caplog.at_level(logging.INFO, logger="jobstead.scheduler"):
        report = s.tick()
    latest = START + timedelta(minutes=4)
    assert [(f.cron, f.fire_at) for f in report.fired] == [("minutely", latest)]  # one catch-up, the latest
    assert [(k.cron, k.fire_at, k.reason) for k in report.skipped] == [("with_deadline", latest, "deadline")]
    assert "2 fire time(s)" in caplog.text and "missed" in caplog.text
    assert "past its starting deadline of 30 s" in caplog.text
    assert any(r.levelno == logging.WARNING and "missed" in r.getMessage() for r in caplog.records), (
        "missed while running: a warning"
    )
    assert s.tick().fired == []  # and nothing more for those fire times

    clock.advance(seconds=20)  # +5:05, on time again
    assert sorted(f.cron for f in s.tick().fired) == ["minutely", "with_deadline"]
    assert fire_times(app, "minutely") == [START + timedelta(minutes=m) for m in (1, 4, 5)]
    assert fire_times(app, "with_deadline") == [START + timedelta(minutes=m) for m in (1, 5)]


def test_a_changed_schedule_counts_from_the_change_not_from_the_last_fire(
    make_app: Callable[..., App], clock: FakeClock
) -> None:
    first = make_app(clock=clock)
    first.cron("0 * * * *", name="report", handler=first.handler(lambda: None, name="report"))
    first.publish_crons()
    clock.advance(minutes=30)
    second = make_app(clock=clock)  # the next deploy: every five minutes
    second.cron("*/5 * * * *", name="report", handler=second.handler(lambda: None, name="report"))
    second.publish_crons()
    s = scheduler(second)
    assert s.tick().fired == []  # 09:30 fits the new schedule, but the change was at 09:30: no catch-up
    clock.advance(minutes=5)
    assert [f.fire_at for f in s.tick().fired] == [START + timedelta(minutes=35)]


# -- overlap ---------------------------------------------------------------------


def test_overlap_skip_waits_while_the_previous_job_is_queued_running_or_retrying(
    make_app: Callable[..., App], clock: FakeClock
) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *", overlap="skip")
    def slow() -> None: ...

    app.publish_crons()
    s = scheduler(app)
    store = app.store
    clock.advance(minutes=1)
    (first,) = s.tick().fired

    clock.advance(minutes=1)  # queued
    report = s.tick()
    assert report.fired == [] and [k.reason for k in report.skipped] == ["overlap"]

    (claimed,) = store.claims.claim(worker_id="test-worker", handlers=["slow"], queues=None, limit=1, lease_seconds=300)
    assert claimed.id == first.job_id
    clock.advance(minutes=1)  # running
    assert s.tick().fired == []

    set_status(store, first.job_id, JobStatus.RETRYING)
    clock.advance(minutes=1)  # retrying
    assert s.tick().fired == []

    set_status(store, first.job_id, JobStatus.SUCCEEDED)
    clock.advance(minutes=1)
    (second,) = s.tick().fired
    assert second.fire_at == START + timedelta(minutes=5)
    assert [j.id for _, j in cron_jobs(app, "slow")] == [first.job_id, second.job_id]


def test_overlap_allow_fires_beside_a_live_job(make_app: Callable[..., App], clock: FakeClock) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *")
    def quick() -> None: ...

    app.publish_crons()
    s = scheduler(app)
    for _ in range(3):
        clock.advance(minutes=1)
        s.tick()
    assert [j.status for _, j in cron_jobs(app, "quick")] == [JobStatus.QUEUED] * 3


def test_overlap_replace_cancels_the_previous_job_then_fires(make_app: Callable[..., App], clock: FakeClock) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *", overlap="replace")
    def refresh() -> None: ...

    app.publish_crons()
    s = scheduler(app)
    store = app.store
    clock.advance(minutes=1)
    (first,) = s.tick().fired
    clock.advance(minutes=1)
    (second,) = s.tick().fired
    assert app.get_job(first.job_id).status is JobStatus.CANCELLED
    store.claims.claim(worker_id="w", handlers=["refresh"], queues=None, limit=1, lease_seconds=300)
    clock.advance(minutes=1)
    (third,) = s.tick().fired
    running = app.get_job(second.job_id).record
    assert running.status is JobStatus.RUNNING and running.cancel_requested  # told to stop
    assert app.get_job(third.job_id).status is JobStatus.QUEUED


# -- sources and ownership ---------------------------------------------------------


def test_a_code_cron_disabled_in_the_database_stays_disabled_across_restarts(
    make_app: Callable[..., App], clock: FakeClock
) -> None:
    def deploy(schedule: str) -> App:
        app = make_app(clock=clock)
        app.cron(schedule, name="nightly", handler=app.handler(lambda: None, name="nightly"))
        return app

    first = deploy("0 3 * * *")
    with running(scheduler(first, interval=0.05)):
        pass
    disabled = first.store.crons.set_enabled("nightly", False)
    assert disabled is not None and not disabled.enabled and disabled.next_fire_at is None
    first.close()

    second = deploy("0 4 * * *")  # the next deploy changes the schedule
    s = scheduler(second, interval=0.05)
    with running(s):
        pass
    cron = second.store.crons.get("nightly")
    assert cron is not None and cron.schedule == "0 4 * * *" and not cron.enabled and cron.source == "code"
    clock.advance(days=2)
    assert s.tick().fired == []

    second.store.crons.set_enabled("nightly", True)
    assert s.tick().fired == []  # the two days it was disabled are not caught up
    clock.set(datetime(2025, 1, 9, 4, 0, 1, tzinfo=UTC))
    assert [f.fire_at for f in s.tick().fired] == [datetime(2025, 1, 9, 4, tzinfo=UTC)]


def test_a_deleted_code_cron_is_recreated_when_a_worker_or_scheduler_starts(
    make_app: Callable[..., App],
    clock: FakeClock,
    running_worker: Callable[..., contextlib.AbstractContextManager[object]],
) -> None:
    app = make_app(clock=clock)

    @app.cron("*/5 * * * *", timezone=TALLINN)
    def cleanup() -> None: ...

    store = app.store  # first use publishes
    assert store.crons.get("cleanup") is not None
    assert store.crons.remove("cleanup", source="code")
    assert store.crons.get("cleanup") is None
    with running_worker(app):
        pass
    assert store.crons.get("cleanup") is not None

    assert store.crons.remove("cleanup", source="code")
    with running(scheduler(app, interval=0.05)):
        pass
    cron = store.crons.get("cleanup")
    assert cron is not None and cron.enabled and cron.source == "code" and cron.timezone == TALLINN


def test_crons_of_unknown_handlers_and_stale_code_crons_are_left_alone(
    make_app: Callable[..., App], clock: FakeClock
) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *")
    def mine() -> None: ...

    store = app.store
    store.crons.put(
        CronDefinition(name="theirs", schedule="* * * * *", handler="another_apps_handler", source="database")
    )
    # A code cron that this version of the code no longer defines (same handler).
    store.crons.put(CronDefinition(name="retired", schedule="* * * * *", handler="mine", source="code"))
    before = {c.name: c for c in store.crons.list_crons()}
    s = scheduler(app)
    for _ in range(5):
        clock.advance(minutes=1)
        report = s.tick()
        assert [f.cron for f in report.fired] == ["mine"]
    app.publish_crons()
    after = {c.name: c for c in store.crons.list_crons()}
    for name in ("theirs", "retired"):
        assert after[name] == before[name]  # untouched: not fired, not advanced, not deleted
    assert cron_jobs(app, "theirs") == [] and cron_jobs(app, "retired") == []


def test_code_never_overwrites_a_cron_another_source_owns(
    make_app: Callable[..., App], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(clock=clock)
    app.handler(lambda: None, name="report")
    store = app.store
    store.crons.put(CronDefinition(name="report", schedule="0 6 * * *", handler="report", source="crd"))
    app.cron("*/5 * * * *", handler="report")  # published at once: the store is in use
    with caplog.at_level(logging.WARNING, logger="jobstead.app"):
        app.publish_crons()
    cron = store.crons.get("report")
    assert cron is not None and cron.source == "crd" and cron.schedule == "0 6 * * *"
    assert "comes from crd" in caplog.text


def test_put_and_remove_are_source_aware_for_the_operator(make_app: Callable[..., App], clock: FakeClock) -> None:
    app = make_app(clock=clock)
    app.handler(lambda: None, name="report")
    store = app.store
    definition = CronDefinition(
        name="nightly-report",
        schedule="0 3 * * *",
        handler="report",
        timezone=TALLINN,
        args={},
        queue="reports",
        priority=5,
        tenant="acme",
        overlap=CONCURRENCY_POLICIES["Forbid"],
        starting_deadline=300,
        source="crd",
    )
    created = store.crons.put(definition)
    assert created.definition == definition
    assert created.next_fire_at == datetime(2025, 1, 7, 1, tzinfo=UTC)  # 03:00 EET

    with pytest.raises(InvalidSchedule, match="unknown time zone 'Tallinn'"):
        store.crons.put(
            CronDefinition(name="nightly-report", schedule="0 3 * * *", handler="report", timezone="Tallinn")
        )
    assert store.crons.get("nightly-report") == created  # nothing written

    clock.advance(hours=1)
    suspended = store.crons.put(CronDefinition(**{**vars(definition), "enabled": False}))
    assert not suspended.enabled and suspended.created_at == created.created_at

    assert not store.crons.remove("nightly-report", source="database")
    assert not store.crons.remove("nightly-report", source="code")
    assert store.crons.get("nightly-report") is not None
    assert store.crons.remove("nightly-report", source="crd")
    assert store.crons.get("nightly-report") is None


def test_a_cron_job_takes_the_crons_options_then_the_handlers(make_app: Callable[..., App], clock: FakeClock) -> None:
    app = make_app(clock=clock)

    @app.cron("* * * * *", args={"to": "ops@example.com"}, tenant="acme", priority=9, name="digest")
    @app.handler(queue="mail", priority=1)
    def send(to: str, ctx: Context) -> None: ...

    app.publish_crons()
    clock.advance(minutes=1)
    (fired,) = scheduler(app).tick().fired
    job = app.get_job(fired.job_id).record
    assert (job.handler, job.args, job.queue, job.priority, job.tenant) == (
        "send",
        {"to": "ops@example.com"},
        "mail",
        9,
        "acme",
    )
    assert job.run_at == fired.fire_at and job.status is JobStatus.QUEUED
    assert job.metadata == {"cron": "digest", "cron_fire_at": fired.fire_at.isoformat()}


# -- the real loop, with the real clock ----------------------------------------------


def test_two_running_schedulers_fire_each_second_once(make_app: Callable[..., App]) -> None:
    apps = [make_app() for _ in range(2)]
    for app in apps:
        app.cron("* * * * * *", name="every_second", handler=app.handler(lambda: None, name="beat"))
    # A 5-second interval: only waking for each fire time can produce a job every second.
    with running(scheduler(apps[0], interval=5)), running(scheduler(apps[1], interval=5)):
        time.sleep(3.3)
    jobs = cron_jobs(apps[0], "every_second")
    fires = [fire for fire, _ in jobs]
    assert len(fires) >= 3, fires
    assert fires == sorted(set(fires)) and all(f.microsecond == 0 for f in fires)  # never twice
    lateness = sorted((job.created_at - fire).total_seconds() for fire, job in jobs)
    assert lateness[len(lateness) // 2] < 0.3, lateness  # deferred at the fire time, not at some later poll


# -- schema ------------------------------------------------------------------------


def test_the_cron_migration_downgrades_and_upgrades_again(make_app: Callable[..., App]) -> None:
    app = make_app()
    store = app.store
    downgrade(store.db, "0001")
    with store.db.engine.connect() as conn, pytest.raises(Exception):  # noqa: B017 - whatever the driver calls it
        conn.execute(text(f"SELECT count(*) FROM {store.tables.qualified(store.tables.crons)}"))
    upgrade(store.db)
    assert store.schema_is_current()
    assert store.crons.list_crons() == []


def test_database_scheduler_fires_known_handlers_and_recreates_deleted_code_crons(
    make_app: Callable[..., App], running_worker: Callable[..., Any]
) -> None:
    """The operator's scheduler has no app code: it works from what workers and the database say."""
    app = make_app()

    @app.cron("* * * * * *", name="every-second")
    def tick() -> None: ...

    @app.handler
    def other() -> None: ...

    # the store stamps re-created crons with real time: start the scheduler's clock there
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    with running_worker(app):  # a live worker that runs both handlers: it records its code crons
        store = app.store
        assert store.crons.remove("every-second", source="code")  # someone deletes the code cron
        # republish_every=0: every pass republishes what live workers record
        scheduler = Scheduler(store=store, clock=clock, install_signal_handlers=False, republish_every=0)
        report = scheduler.tick()  # re-creates it (the definition came from the worker) ...
        assert store.crons.get("every-second") is not None
        clock.advance(seconds=3)
        report = scheduler.tick()  # ... and fires it like any other
        assert [f.cron for f in report.fired] == ["every-second"]
        store.crons.set_enabled("every-second", False)
        scheduler.tick()  # republishes: disabled stays disabled
        assert store.crons.get("every-second").enabled is False
