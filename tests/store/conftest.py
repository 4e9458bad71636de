"""The store conformance suite: one set of tests, run against every driver.

Every guarantee the rest of Jobstead relies on (lease compare-and-set, global
limits, pauses, deduplication keys, retention, exactly-once cron fires,
maintenance turns) is stated here against ``Store``, the one interface, and
checked on each backend. A new driver is done when this suite passes on it.

Time is a hand-moved clock, so expiry and schedules are tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from jobstead.retry import RetryPolicy
from jobstead.store import HandlerDefinition, Store
from tests.conftest import Target


@dataclass
class ManualClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def store(target: Target, clock: ManualClock) -> Iterator[Store]:
    store = Store.connect(target.url, schema=target.schema, clock=clock)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def handler(
    name: str, *, concurrency: int | None = None, max_attempts: int = 3, queue: str = "default"
) -> HandlerDefinition:
    return HandlerDefinition(
        name=name,
        queue=queue,
        priority=0,
        concurrency=concurrency,
        max_attempts=max_attempts,
        retry=RetryPolicy.fixed(10),
        timeout=None,
    )
