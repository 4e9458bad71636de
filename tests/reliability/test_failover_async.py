"""A failover with an asynchronous standby: claims the new primary never saw, and the runs they leave behind.

Without a synchronous standby a claim is acknowledged before the standby has
it, so after the failover the new primary shows the job queued while its first
run goes on: another worker (or the same one) claims it and it starts again.
What Jobstead promises then is at-least-once, and that the first run stops as
soon as its worker reaches the new primary: the worker's first lease renewal
there does not find the job held by it and cancels the run (a claim of a job
it is running says the same at once). A failed renewal is retried within a
quarter of a second, so the overlap lasts about as long as it takes the
worker to reach the new primary after another did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.failover import run_lagging_failover
from tests.support.standby import ReplicatedPair, replicated_pair

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: The longest two runs of one job may overlap: the renewal's retry (0.25 s), its round trip,
#: and a cancelled sync handler's return, with room for a loaded machine (before the fix: 4.6 s).
OVERLAP_BOUND = 2.0


@pytest.fixture
def async_pair() -> Iterator[ReplicatedPair]:
    with replicated_pair(synchronous=False) as pair:
        yield pair


@pytest.mark.timeout(400)
def test_an_asynchronous_failover_stops_first_runs_the_new_primary_does_not_know(
    async_pair: ReplicatedPair, tmp_path: Path
) -> None:
    report = run_lagging_failover(async_pair, tmp_path, jobs=12)
    print("\n".join(["", "failover (asynchronous standby, every claim lost):", *report.lines()]))
    logs = "\n".join(f"--- {name}\n{text[-1500:]}" for name, text in report.logs.items())
    assert report.died == [], logs
    # No claim was shipped: every job ran again (at-least-once, as promised) ...
    assert report.ran_again == 12, logs
    # ... and every first run stopped once its worker reached the new primary.
    assert report.overlap_seconds < OVERLAP_BOUND, logs
    assert report.unfinished == 0, logs
