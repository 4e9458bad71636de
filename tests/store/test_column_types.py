"""Values come back as they went in, on every driver: floats as floats, times to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime

from jobstead.store import Store
from jobstead.store.records import NewJob
from tests.store.conftest import handler


def test_a_timeout_comes_back_as_the_same_float(store: Store) -> None:
    """MySQL's FLOAT is single precision and its DOUBLE reads as Decimal by default: neither may leak."""
    store.registry.publish_handlers([handler("work")])
    (job,) = store.enqueue.insert([NewJob(handler="work", queue="default", args={}, timeout=0.1)])
    (claimed,) = store.claims.claim(worker_id="w", handlers=["work"], queues=None, limit=1, lease_seconds=30)
    assert type(claimed.timeout) is float and claimed.timeout == 0.1
    fetched = store.queries.get_job(job.id)
    assert fetched is not None and type(fetched.timeout) is float and fetched.timeout == 0.1


def test_times_keep_their_microseconds_and_zone(store: Store) -> None:
    store.registry.publish_handlers([handler("work")])
    at = datetime(2026, 6, 1, 11, 0, 0, 123456, tzinfo=UTC)
    (job,) = store.enqueue.insert([NewJob(handler="work", queue="default", args={}, run_at=at)])
    fetched = store.queries.get_job(job.id)
    assert fetched is not None and fetched.run_at == at and fetched.run_at.tzinfo is not None
