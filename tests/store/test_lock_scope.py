"""What a store transaction locks is what it works on: a live worker never waits on it for nothing.

On the databases with row locks and several processes (PostgreSQL, MariaDB).
A transaction is held open at a chosen point (its write paused) while a live
worker renews and completes its own jobs: those must not wait for it. Waiting
is how live workers lost their leases on MariaDB while dead workers' jobs were
rescued (``tests/multiprocess/test_batches_under_fire.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from jobstead.store import Store
from tests.conftest import Target
from tests.store.conftest import ManualClock, handler
from tests.store.test_contract import claim, done, new

#: Far below the server's own bounds on a held transaction (10 s) and lock wait (50 s).
NO_WAIT_SECONDS = 3.0


@pytest.fixture
def target(server_target: Target) -> Target:
    return server_target


@contextmanager
def held_open(run: Callable[[], Any], pause_in: Callable[[Callable[..., Any]], None]) -> Iterator[list[Any]]:
    """``run`` on a thread, paused inside its transaction (at the call ``pause_in`` wraps, on that
    thread only) until the block ends; the block gets what ``run`` returned, once it has."""
    inside, resume = threading.Event(), threading.Event()
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(run()), daemon=True)

    def pausing(original: Callable[..., Any]) -> Callable[..., Any]:
        def paused(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is thread:
                inside.set()
                resume.wait(30)
            return original(*args, **kwargs)

        return paused

    pause_in(pausing)
    thread.start()
    try:
        assert inside.wait(10), "the transaction reached its pause"
        yield outcome
    finally:
        resume.set()
        thread.join(30)


def _renew_and_complete(store: Store, worker: str, jobs: Sequence[Any]) -> float:
    """Seconds a live worker's renewal and completion of its own jobs took."""
    started = time.monotonic()
    report = store.leases.renew(worker, 30, [j.id for j in jobs])
    assert report.held == {j.id for j in jobs}
    assert store.leases.complete([done(j, store, worker=worker) for j in jobs]) == set()
    return time.monotonic() - started


@pytest.mark.parametrize(
    "waiting",
    # Few rows: the planner scans the table (and the renewal waited on the rescued row it
    # passed). Many: it finds running jobs through the status index (and the rescue locked
    # every one it passed, live ones too).
    [0, 200],
    ids=["few-jobs", "jobs-waiting"],
)
def test_a_rescue_locks_only_the_jobs_it_rescues(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, waiting: int
) -> None:
    store.registry.publish_handlers([handler("work", max_attempts=5)])
    store.enqueue.insert([new(args={"n": i}) for i in range(4)])
    dead = claim(store, worker="dead", limit=1)
    live = claim(store, worker="live", limit=3)
    store.enqueue.insert([new(args={"n": i}) for i in range(waiting)])
    clock.advance(20)
    store.leases.renew("live", 30, [j.id for j in live])
    clock.advance(15)  # dead's lease is over, live's runs on

    def pause_in(pausing: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        # after the rescue found (and locked) its rows, before it writes them
        monkeypatch.setattr(store.leases, "_write", pausing(store.leases._write))

    with held_open(store.leases.rescue_expired, pause_in) as rescued:
        took = _renew_and_complete(store, "live", live)
    assert took < NO_WAIT_SECONDS, f"a live worker waited {took:.1f} s for a rescue of someone else's job"
    assert rescued == [[j.id for j in dead]]
