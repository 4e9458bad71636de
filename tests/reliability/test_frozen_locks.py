"""A process frozen in the middle of a write must not keep rows locked (issue 13).

A SIGSTOPped worker (or a GC or VM pause) keeps its connections open, so the
server keeps whatever its open transaction locked. The rescuer skips locked
rows, and other claimers wait on a limited handler's row: a lock held by a
frozen process would block crash recovery, or a handler's every claim, for as
long as the freeze lasts. Here the freeze is a thread held still right after
its statement ran on the server (``after_cursor_execute``, before any
commit): to the database that is exactly a frozen client. The other side is a
second store on its own engine, as another process would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, Completion, CronDefinition, NewJob, Store
from tests.conftest import Target
from tests.support.store_handlers import publish_handler

pytestmark = [pytest.mark.postgres]

LEASE = 1.0
#: Far longer than any bound under test, so a freeze outlasts it.
FROZEN_FOR = 30.0


@pytest.fixture
def stores(postgres_target: Target) -> Iterator[tuple[Store, Store]]:
    """The frozen process's store and another process's, on one schema."""
    mine = Store.connect(postgres_target.url, schema=postgres_target.schema)
    mine.migrate()
    other = Store.connect(postgres_target.url, schema=postgres_target.schema)
    try:
        yield mine, other
    finally:
        mine.close()
        other.close()


class Freezer:
    """Holds the calling thread still after its next statement matching ``marker`` has run."""

    def __init__(self, store: Store) -> None:
        self.marker = ""
        self.frozen = threading.Event()
        self.thaw = threading.Event()
        self._thread: int | None = None
        event.listen(store.db.engine, "after_cursor_execute", self._after)

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == self._thread and self.marker in statement:
            self._thread = None
            self.frozen.set()
            self.thaw.wait(FROZEN_FOR)

    @contextmanager
    def freezing(self, marker: str, call: Callable[[], object]) -> Iterator[list[object]]:
        """Run ``call`` on a thread that freezes after its ``marker`` statement; yields its outcome once thawed."""
        outcome: list[object] = []

        def run() -> None:
            self._thread = threading.get_ident()
            try:
                outcome.append(call())
            except Exception as exc:  # what the frozen process finds on waking
                outcome.append(exc)

        self.marker = marker
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert self.frozen.wait(10), f"the statement with {marker!r} never ran"
        try:
            yield outcome
        finally:
            self.thaw.set()
            thread.join(10)


def _claim(store: Store, worker: str, handler: str = "h") -> list[ClaimedJob]:
    return store.claims.claim(worker_id=worker, handlers=[handler], queues=None, limit=1, lease_seconds=LEASE)


def _running_job(mine: Store) -> ClaimedJob:
    publish_handler(mine, "h")
    mine.enqueue.insert([NewJob(handler="h", args={}, queue="default")])
    [job] = _claim(mine, "frozen")
    return job


def _rescued_while_frozen(other: Store, job: ClaimedJob) -> list[int]:
    """What another process's rescuer gives back once the frozen worker's lease is over."""
    time.sleep(LEASE + 0.5)
    deadline = time.monotonic() + 5
    while not (rescued := other.leases.rescue_expired()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return rescued


@pytest.mark.parametrize(
    ("write", "marker"),
    [
        pytest.param(lambda s, j: s.leases.renew("frozen", LEASE, [j.id]), "lease_expires_at", id="lease-renewal"),
        pytest.param(
            lambda s, j: s.leases.checkpoint(j.id, "frozen", j.attempts, {"at": 1}), "checkpoint", id="checkpoint"
        ),
    ],
)
def test_a_worker_frozen_right_after_writing_its_job_lets_the_rescuer_have_it(
    stores: tuple[Store, Store], write: Callable[[Store, ClaimedJob], object], marker: str
) -> None:
    mine, other = stores
    job = _running_job(mine)
    freezer = Freezer(mine)
    with freezer.freezing(marker, lambda: write(mine, job)):
        rescued = _rescued_while_frozen(other, job)
    assert rescued == [job.id], "the frozen worker's write kept its job locked: the rescuer skipped it"


def test_a_process_frozen_while_taking_a_maintenance_turn_does_not_stop_the_others(
    stores: tuple[Store, Store],
) -> None:
    mine, other = stores
    every = timedelta(milliseconds=200)
    assert mine.turns.take("rescue", every, by="frozen")
    time.sleep(0.3)
    freezer = Freezer(mine)
    taken: list[bool] = []
    with freezer.freezing("next_run_at", lambda: mine.turns.take("rescue", every, by="frozen")):
        time.sleep(0.3)
        taker = threading.Thread(
            target=lambda: taken.append(other.turns.take("rescue", every, by="other")), daemon=True
        )
        taker.start()
        taker.join(5)
        assert not taker.is_alive(), "another process waits for the frozen one's maintenance turn"
    assert taken == [True]


def test_a_claimer_frozen_before_its_commit_is_cut_off_after_the_lease(stores: tuple[Store, Store]) -> None:
    """A limited handler's claims take its slot rows: a frozen claimer holds one, and only until the bound.

    The other claimer skips the held slot (it never waits on it) and gets the
    job once the frozen claim's transaction is cut off at the lease bound.
    """
    mine, other = stores
    publish_handler(mine, "limited", concurrency=1)
    [queued] = mine.enqueue.insert([NewJob(handler="limited", args={}, queue="default")])
    freezer = Freezer(mine)
    theirs: list[ClaimedJob] = []
    slowest = 0.0

    def claim_until_taken() -> None:
        nonlocal slowest
        deadline = time.monotonic() + LEASE + 10
        while not theirs and time.monotonic() < deadline:
            began = time.monotonic()
            theirs.extend(_claim(other, "other", "limited"))
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.2)

    with freezer.freezing("lease_owner", lambda: _claim(mine, "frozen", "limited")) as woke_to:
        started = time.monotonic()
        claimer = threading.Thread(target=claim_until_taken, daemon=True)
        claimer.start()
        claimer.join(LEASE + 15)
        assert not claimer.is_alive(), "claims of a limited handler wait for a frozen claimer"
        waited = time.monotonic() - started
    assert [j.id for j in theirs] == [queued.id]
    assert waited < LEASE + 5
    assert slowest < LEASE, "a claim waited on the frozen claimer's lock instead of skipping it"
    assert len(woke_to) == 1 and isinstance(woke_to[0], Exception), "the frozen claim must not take effect"
    assert mine.is_transient(woke_to[0]), "on waking it finds a transient error, and claims again"


def test_a_worker_frozen_before_committing_a_completion_lets_the_rescuer_have_it(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobstead.store.drivers import postgresql

    monkeypatch.setattr(postgresql, "LOCK_BOUND_SECONDS", LEASE)
    mine, other = stores
    job = _running_job(mine)
    done = Completion(
        job_id=job.id,
        owner="frozen",
        attempt=job.attempts,
        outcome=AttemptOutcome.SUCCEEDED,
        status=JobStatus.SUCCEEDED,
        finished_at=mine.clock(),
    )
    freezer = Freezer(mine)
    with freezer.freezing("done", lambda: mine.leases.complete([done])) as woke_to:
        rescued = _rescued_while_frozen(other, job)
    assert rescued == [job.id]
    assert isinstance(woke_to[0], Exception), "the frozen completion must not be committed after the rescue"
    with other.db.engine.connect() as conn:
        status = conn.execute(select(other.tables.jobs.c.status).where(other.tables.jobs.c.id == job.id)).scalar()
    assert status == JobStatus.RETRYING.value


def test_jobs_claimed_just_before_a_freeze_are_handed_back_not_started(postgres_target: Target) -> None:
    """Frozen between its claim and starting the jobs, a worker wakes with leases that may be
    gone (the jobs rescued and running elsewhere): it must not start them (the chaos run saw a
    limit of 3 exceeded that way), and hands them back unspent where the lease still holds."""
    from jobstead import App
    from tests.conftest import worker_thread

    app = App(postgres_target.url, schema=postgres_target.schema)
    ran: list[int] = []

    @app.handler()
    def h() -> None:
        ran.append(1)

    app.open()
    claim = app.store.claims.claim
    frozen_once: list[list[ClaimedJob]] = []

    def claim_then_freeze(**kwargs: Any) -> list[ClaimedJob]:
        jobs = claim(**kwargs)
        if jobs and not frozen_once:
            frozen_once.append(jobs)
            time.sleep(LEASE * 1.5)  # the process stands still after its claim committed
        return jobs

    app.store.claims.claim = claim_then_freeze  # type: ignore[method-assign]
    job = h.defer()
    try:
        with worker_thread(app, lease_seconds=LEASE, poll_interval=0.05):
            job.wait(30)
        outcomes = [a.outcome for a in job.attempts_log()]
    finally:
        app.close()
    assert frozen_once and [j.id for j in frozen_once[0]] == [job.id]
    assert ran == [1], "run once, after it was handed back"
    # rescued meanwhile (as another worker would), or handed back if nobody had yet
    assert outcomes in (
        [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED],
        [AttemptOutcome.RELEASED, AttemptOutcome.SUCCEEDED],
    ), outcomes


def _bounded_at_lease(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The steering calls' lock bound (``Database.begin_bounded``), shortened to the lease so a
    test need not wait 10 s; returns what gives it back.

    Call that once the frozen side has begun its transaction (its bound is set then): the other
    side keeps the real bound. With 1 s for both, the other side's own transaction was cut off
    when its thread stalled for a second between two statements on a busy machine (the full
    suite, once), and the test failed as if it had waited on the frozen lock.
    """
    from jobstead.store.drivers import base

    real = base.LOCK_BOUND_SECONDS
    monkeypatch.setattr(base, "LOCK_BOUND_SECONDS", LEASE)
    return lambda: monkeypatch.setattr(base, "LOCK_BOUND_SECONDS", real)


def test_a_caller_frozen_while_cancelling_a_running_job_lets_the_rescuer_have_it(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jobstead cancel`` (or the dashboard) stopped right after marking the job: the row stays locked
    only as long as the bound, not as long as the freeze, so the dead worker's job is still rescued."""
    lift_bound = _bounded_at_lease(monkeypatch)
    mine, other = stores
    job = _running_job(other)  # claimed by "frozen" on the other store: the worker that then dies
    freezer = Freezer(mine)
    with freezer.freezing("SET cancel_requested", lambda: mine.control.cancel(job.id)) as woke_to:
        lift_bound()
        rescued = _rescued_while_frozen(other, job)
    assert rescued == [job.id], "the frozen cancel kept the job locked: the rescuer skipped it"
    assert isinstance(woke_to[0], Exception), "the frozen cancel must not be committed after the rescue"
    assert mine.is_transient(woke_to[0]), "the caller finds a transient error it may retry"


def test_a_caller_frozen_while_cancelling_a_batch_lets_the_rescuer_have_its_running_member(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    lift_bound = _bounded_at_lease(monkeypatch)
    mine, other = stores
    publish_handler(other, "h")
    _, [member] = other.batches.create([NewJob(handler="h", args={}, queue="default")])
    [job] = _claim(other, "frozen")
    assert job.id == member.id
    freezer = Freezer(mine)
    with freezer.freezing("SET cancel_requested", lambda: mine.batches.cancel(member.batch_id or 0)) as woke_to:
        lift_bound()
        rescued = _rescued_while_frozen(other, job)
    assert rescued == [job.id], "the frozen batch cancel kept its member locked: the rescuer skipped it"
    assert isinstance(woke_to[0], Exception)


def _in_time(call: Callable[[], object], seconds: float) -> list[object]:
    """``call``'s outcome if it returns within ``seconds`` (on a thread), else nothing."""
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome


def test_a_scheduler_frozen_while_firing_a_cron_does_not_stop_the_others(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen right after moving the cron's ``handled_until``: its row lock goes with the bound, so
    another scheduler fires the same time (once) instead of waiting on it for the whole freeze."""
    lift_bound = _bounded_at_lease(monkeypatch)
    mine, other = stores
    publish_handler(mine, "h")
    mine.crons.add(CronDefinition(name="nightly", schedule="* * * * *", handler="h", source="database"))
    fire_at = mine.clock() + timedelta(minutes=1)

    def fire(store: Store) -> object:
        return store.crons.fire("nightly", fire_at, schedule="* * * * *", timezone="UTC")

    freezer = Freezer(mine)
    with freezer.freezing("handled_until", lambda: fire(mine)) as woke_to:
        lift_bound()
        fired = _in_time(lambda: fire(other), 8 * LEASE)
        assert fired, "the other scheduler waited on the frozen one's cron row"
    assert getattr(fired[0], "outcome", None) == "fired"
    assert isinstance(woke_to[0], Exception), "the frozen fire must not commit a second job"
    assert [j.handler for j in other.queries.list_jobs()] == ["h"]


def test_a_worker_frozen_while_publishing_its_handlers_does_not_stop_limited_claims(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every claim of a limited handler locks its row: a publish frozen holding it stops them only
    as long as the bound."""
    lift_bound = _bounded_at_lease(monkeypatch)
    mine, other = stores
    publish_handler(other, "limited", concurrency=2)
    other.enqueue.insert([NewJob(handler="limited", args={}, queue="default")])
    freezer = Freezer(mine)
    with freezer.freezing("jobstead_handlers", lambda: publish_handler(mine, "limited", concurrency=2)):
        lift_bound()
        claimed = _in_time(lambda: _claim(other, "w", "limited"), 8 * LEASE)
        assert claimed, "the limited claim waited on the frozen publish's handler row"
    assert len(claimed[0]) == 1  # type: ignore[arg-type]
