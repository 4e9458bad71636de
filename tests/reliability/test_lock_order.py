"""A completion and a lease renewal of the same rows lock them in one order: no deadlock.

Seen in the 1,000,000-job drain: a worker's completion batch (in the order its
jobs finished) and a renewal (through the primary key, in id order) each held
a row the other waited for; the server aborted one as a deadlock, and a lost
renewal let hundreds of claimed jobs' leases lapse. Here a third connection
holds one row so that both are in flight at once, every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import ClaimedJob, Completion, NewJob, Store
from jobstead.store.drivers.postgresql import libpq_conninfo
from tests.conftest import Target
from tests.support.store_handlers import publish_handler

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def store(postgres_target: Target) -> Iterator[Store]:
    store = Store.connect(postgres_target.url, schema=postgres_target.schema)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _running(store: Store, n: int) -> list[ClaimedJob]:
    publish_handler(store, "h")
    store.enqueue.insert([NewJob(handler="h", args={}, queue="default") for _ in range(n)])
    jobs = store.claims.claim(worker_id="w", handlers=["h"], queues=None, limit=n, lease_seconds=60)
    return sorted(jobs, key=lambda j: j.id)


def test_a_renewal_beside_a_completion_of_the_same_rows_is_no_deadlock(store: Store) -> None:
    a, b, c = _running(store, 3)
    jobs = store.tables.qualified(store.tables.jobs)
    outcome: dict[str, object] = {}

    def done(job: ClaimedJob) -> Completion:
        return Completion(
            job_id=job.id,
            owner="w",
            attempt=job.attempts,
            outcome=AttemptOutcome.SUCCEEDED,
            status=JobStatus.SUCCEEDED,
            finished_at=store.clock(),
        )

    def run(name: str, call: object) -> threading.Thread:
        def target() -> None:
            try:
                outcome[name] = call()  # type: ignore[operator]
            except Exception as exc:
                outcome[name] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    with psycopg.connect(libpq_conninfo(store.db.engine.url)) as blocker:
        blocker.execute(f"SELECT 1 FROM {jobs} WHERE id = %s FOR UPDATE", (c.id,))
        # Finished in the order b, c, a: the completion takes b, then waits for c.
        completing = run("complete", lambda: store.leases.complete([done(b), done(c), done(a)]))
        time.sleep(0.5)
        # The renewal takes a (unless it waits its turn behind the completion), then waits for b.
        renewing = run("renew", lambda: store.leases.renew("w", 60, [c.id, b.id, a.id]))
        time.sleep(0.5)
        blocker.rollback()  # c is free: the completion goes on to a
    completing.join(15)
    renewing.join(15)
    assert not isinstance(outcome.get("complete"), Exception), outcome
    assert not isinstance(outcome.get("renew"), Exception), outcome
    assert outcome["complete"] == set()  # every completion applied
    assert {job.id for job in (a, b, c)}.isdisjoint(outcome["renew"].held)  # type: ignore[attr-defined]
