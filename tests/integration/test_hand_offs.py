"""What a worker's completion writes claim in their own transaction (``ClaimLoop.hand_off``), on every driver.

* A workflow step that ends releases the steps after it in its completion's
  transaction, and the same transaction claims them for this worker, so they
  start without a claim's round trip, and without waiting for the next poll
  where no NOTIFY wakes the claim loop (SQLite, MariaDB, a worker that does
  not listen). The workers here poll every 30 s: a released step that had to
  be found by a claim would wait that long, or for a NOTIFY, which a step
  claimed in the write no longer sends (``tests/store/test_release_wake_ups.py``).
* A worker whose handlers all have a global limit never asks for more jobs
  than those limits could let it hold, whatever its concurrency: a claim for
  the rest could take nothing, and ran beside every completion write.
* Never where a claim would wait on a lock: a worker serving a handler with a
  limit per key hands nothing off, workflow steps or not.
* Under a global limit, writes may go beside each other (each with its own
  hand-off; ``tests/integration/test_writes_alongside.py``), and what their
  hand-offs ask for together stays within the free slots; without a limit,
  one write at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from jobstead import App, JobStatus
from jobstead.store import Completion, HandOff, Store
from jobstead.store.claims import Claims
from jobstead.store.leases import Leases
from jobstead.worker.claiming import ClaimLoop
from jobstead.worker.worker import Worker

#: No wake-ups and one claim per 30 s at most: only a hand-off starts a released step in time.
QUIET = {"listen": False, "poll_interval": 30.0}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """(``claim`` or ``hand-off``, how many jobs it asked for) of every claim, as the real calls go through."""
    seen: list[tuple[str, int]] = []
    claim, complete = Claims.claim, Leases.complete

    def recorded_claim(self: Claims, **kwargs: Any) -> Any:
        seen.append(("claim", kwargs["limit"]))
        return claim(self, **kwargs)

    def recorded_complete(self: Leases, completions: Sequence[Completion], hand_off: HandOff | None = None) -> Any:
        if hand_off is not None:
            seen.append(("hand-off", hand_off.limit))
        return complete(self, completions, hand_off)

    monkeypatch.setattr(Claims, "claim", recorded_claim)
    monkeypatch.setattr(Leases, "complete", recorded_complete)
    yield seen


def _owner(store: Store, job_id: int) -> str | None:
    record = store.queries.get_job(job_id)
    assert record is not None
    return record.lease_owner


def test_a_step_released_by_a_completion_is_claimed_in_its_transaction(
    app: App,
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    asked: list[tuple[str, int]],
) -> None:
    @app.handler
    async def step() -> None:
        await asyncio.sleep(0)

    wf = app.workflow("release")
    wf.add("parent", step.job())
    wf.add("child", step.job(), after=["parent"])
    wf.add("grandchild", step.job(), after=["child"])
    run = wf.defer()
    with running_worker(app, concurrency=4, **QUIET) as worker:
        run.wait(timeout=15)  # the poll interval is 30 s: each step was handed on by the one before
        assert run.status == "succeeded"
        for name in ("child", "grandchild"):
            assert _owner(app.store, run.steps[name].job_id) == worker.id
    assert [kind for kind, _ in asked].count("hand-off") >= 2


def _idle(claims: ClaimLoop) -> bool:
    """No claim in flight, and waiting for a wake-up: what its last claim found was all there was."""
    return claims._claim is None and claims._idle_until is not None and not claims._wake.is_set()


def test_a_listening_worker_claims_the_steps_its_completions_release_in_their_transaction(
    app: App,
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where NOTIFYs wake the claim loop too: before, the released steps were left to the claim a
    NOTIFY woke in every worker process; now the write that releases them takes them.

    The workflow is deferred once the worker listens and its claim loop is idle: the claim the
    listener's first wake-up sends ("anything may be waiting") asks for every free slot, and a
    completion while it is in flight rightly leaves the released steps to it. Deferred before
    the worker started, on a loaded machine the listener connected as the parent ended."""
    loops: list[ClaimLoop] = []
    notified = ClaimLoop.notified

    def noted(self: ClaimLoop, queue: str) -> None:
        loops.append(self)
        notified(self, queue)

    monkeypatch.setattr(ClaimLoop, "notified", noted)
    handed: list[int] = []
    complete = Leases.complete

    def recorded(self: Leases, completions: Sequence[Completion], hand_off: HandOff | None = None) -> Any:
        lost = complete(self, completions, hand_off)
        if hand_off is not None:
            handed.extend(job.id for job in hand_off.claimed)
        return lost

    monkeypatch.setattr(Leases, "complete", recorded)

    @app.handler
    async def step() -> None:
        await asyncio.sleep(0)

    wf = app.workflow("listening")
    wf.add("parent", step.job())
    wf.add("child", step.job(), after=["parent"])
    wf.add("grandchild", step.job(), after=["child"])
    listens = app.store.supports_listen
    run = None if listens else wf.defer()  # without wake-ups (polling): the worker's first claim takes it
    with running_worker(app, concurrency=4, listen=True, poll_interval=30.0):
        if listens:
            deadline = time.monotonic() + 30
            while not (loops and _idle(loops[0])):  # woken by the listener, and that claim is back
                assert time.monotonic() < deadline, "the worker's listener never woke its claim loop"
                time.sleep(0.01)
            run = wf.defer()
        assert run is not None
        run.wait(timeout=15)
    assert run.status == "succeeded"
    assert {run.steps["child"].job_id, run.steps["grandchild"].job_id} <= set(handed), handed


def test_a_limited_worker_asks_for_no_more_than_its_handlers_limits(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    asked: list[tuple[str, int]],
) -> None:
    app = make_app()

    @app.handler(concurrency=2)
    async def limited(n: int) -> None:
        await asyncio.sleep(0.01)

    jobs = limited.defer_many([{"n": i} for i in range(30)])
    with running_worker(app, concurrency=20, poll_interval=0.05):
        for job in jobs:
            app.get_job(job.id).wait(timeout=30)
    assert asked, "it claimed"
    assert max(n for _, n in asked) <= 2, asked


def test_no_claim_races_the_writes_that_hand_the_slots_on(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    asked: list[tuple[str, int]],
) -> None:
    """A limited handler beside an unlimited one (whose claims the limits do not cap): the writes'
    hand-offs keep the slots busy, and the claim loop does not claim beside each of them."""
    app = make_app()

    @app.handler(concurrency=4)
    async def limited(n: int) -> None:
        return None

    @app.handler
    async def other() -> None:
        return None

    jobs = limited.defer_many([{"n": i} for i in range(400)])
    with running_worker(app, concurrency=50, poll_interval=5.0):
        for job in jobs:
            app.get_job(job.id).wait(timeout=60)
    claims = [n for kind, n in asked if kind == "claim"]
    hand_offs = [n for kind, n in asked if kind == "hand-off"]
    assert len(hand_offs) >= 50, asked
    # One claim beside nearly every write before (85 of 100 on PostgreSQL); a few now, at the start.
    assert len(claims) <= len(hand_offs) // 4, f"{len(claims)} claims beside {len(hand_offs)} hand-offs"


def test_nothing_is_handed_off_where_a_claim_waits_on_a_lock(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    asked: list[tuple[str, int]],
) -> None:
    app = make_app()

    @app.handler(concurrency_by="key", concurrency_per_key=1)
    async def keyed(key: str) -> None:
        await asyncio.sleep(0)

    wf = app.workflow("keyed")
    wf.add("parent", keyed.job(key="a"))
    wf.add("child", keyed.job(key="a"), after=["parent"])
    run = wf.defer()
    with running_worker(app, concurrency=4, poll_interval=0.05):
        run.wait(timeout=15)
    assert run.status == "succeeded"
    assert not [kind for kind, _ in asked if kind == "hand-off"], asked


def test_hand_offs_claim_the_limited_handler_alone_once_the_others_are_found_empty(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claimed too, the unlimited handler's jobs cost a walk past the limited one's whole backlog in
    the queue's index at every write; they are claimed again once something may have come (a
    NOTIFY, the poll interval), so one deferred mid-drain still starts long before the drain ends."""
    asked: list[tuple[str, ...]] = []
    complete = Leases.complete

    def recorded(self: Leases, completions: Sequence[Completion], hand_off: HandOff | None = None) -> Any:
        if hand_off is not None:
            asked.append(tuple(hand_off.handlers))
        return complete(self, completions, hand_off)

    monkeypatch.setattr(Leases, "complete", recorded)
    app = make_app()

    @app.handler(concurrency=4)
    async def limited(n: int) -> None:
        await asyncio.sleep(0.01)

    @app.handler
    async def other() -> None:
        return None

    jobs = limited.defer_many([{"n": i} for i in range(400)])
    with running_worker(app, concurrency=50, poll_interval=0.2):
        app.get_job(jobs[40].id).wait(timeout=30)
        late = other.defer()
        late.wait(timeout=10)
        for job in jobs:
            app.get_job(job.id).wait(timeout=60)
    alone = [handlers for handlers in asked if handlers == ("limited",)]
    assert len(alone) >= len(asked) // 2, f"{len(alone)} of {len(asked)} hand-offs for the limited handler alone"
    records = [app.store.queries.get_job(job.id) for job in [late, *jobs]]
    started = [record.started_at for record in records if record is not None and record.started_at is not None]
    assert len(started) == 401 and started[0] < max(started[1:]), "it waited for the drain to end"


def test_a_batch_finished_by_writes_sent_with_their_claim_settles_once(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the completions and the hand-off's claim go together in a transaction of their own
    (``Driver.complete_alone_then``), a batch member's completion is left to the usual transaction,
    which settles its batch: the batch ends once, and its continuation is deferred once."""
    together: list[int] = []
    driver = type(make_app().store.db.driver)
    complete_alone_then = driver.complete_alone_then

    def recorded(self: Any, *args: Any) -> Any:
        sent = complete_alone_then(self, *args)
        if sent is not None:
            together.append(len(args[1]))
        return sent

    monkeypatch.setattr(driver, "complete_alone_then", recorded)
    app = make_app()
    events: list[str] = []

    @app.handler(concurrency=2)
    async def limited(n: int) -> int:
        return n

    @app.handler
    async def notify(event: str) -> None:
        events.append(event)

    batch = app.defer_batch(
        [limited.job(n=i) for i in range(40)],
        on_success=notify.job(event="success"),
        on_finish=notify.job(event="finish"),
    )
    with running_worker(app, concurrency=10, poll_interval=0.05):
        assert batch.wait(timeout=30).succeeded == 40
        deadline = time.monotonic() + 15
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(events) == ["finish", "success"] and batch.status == "succeeded"
    if app.store.db.driver.one_statement_claim:
        assert together, "no completion went with its hand-off's claim"


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """(completion writes in flight, jobs their hand-offs ask for together) as each write starts."""
    seen: list[tuple[int, int]] = []
    now = [0, 0]
    lock = threading.Lock()
    complete = Leases.complete

    def recorded(self: Leases, completions: Sequence[Completion], hand_off: HandOff | None = None) -> Any:
        asked = hand_off.limit if hand_off is not None else 0
        with lock:
            now[0] += 1
            now[1] += asked
            seen.append((now[0], now[1]))
        try:
            return complete(self, completions, hand_off)
        finally:
            with lock:
                now[0] -= 1
                now[1] -= asked

    monkeypatch.setattr(Leases, "complete", recorded)
    yield seen


def test_writes_beside_each_other_never_ask_for_more_than_the_limit_together(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    in_flight: list[tuple[int, int]],
) -> None:
    """Jobs of a global limit of 3 ending at staggered times: each end may get a write of its own beside
    the others (``CompletionWriter``), and what they ask for together stays within the slots free."""
    app = make_app()

    @app.handler(concurrency=3)
    async def limited(pause: float) -> None:
        await asyncio.sleep(pause)

    rng = random.Random(34)
    jobs = limited.defer_many([{"pause": rng.uniform(0.002, 0.02)} for _ in range(150)])
    with running_worker(app, concurrency=20, poll_interval=5.0):
        for job in jobs:
            app.get_job(job.id).wait(timeout=60)
    assert in_flight and max(asked for _, asked in in_flight) <= 3, in_flight
    records = [app.store.queries.get_job(job.id) for job in jobs]
    assert all(r is not None and r.status is JobStatus.SUCCEEDED and r.attempts == 1 for r in records)


def test_without_a_limit_one_write_is_in_flight_at_a_time(
    make_app: Callable[..., App],
    running_worker: Callable[..., contextlib.AbstractContextManager[Worker]],
    in_flight: list[tuple[int, int]],
) -> None:
    """No hand-off, no write beside another: the completions that end during a write go together in the next."""
    app = make_app()

    @app.handler
    async def free(pause: float) -> None:
        await asyncio.sleep(pause)

    rng = random.Random(34)
    jobs = free.defer_many([{"pause": rng.uniform(0.0, 0.01)} for _ in range(300)])
    with running_worker(app, concurrency=20):
        for job in jobs:
            app.get_job(job.id).wait(timeout=60)
    assert in_flight and max(writes for writes, _ in in_flight) == 1, in_flight
    assert len(in_flight) < len(jobs), "several completions per write"
