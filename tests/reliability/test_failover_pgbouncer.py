"""The failover under load with PgBouncer in front (transaction mode), as most Kubernetes setups have it.

The workers and the producer talk to PgBouncer only; PgBouncer talks to the
primary's address. When the primary is killed and the standby promoted,
PgBouncer is pointed at the new primary (its configuration reloaded, as a
CloudNativePG ``-rw`` Service's endpoints follow the primary) and re-opens its
server connections there, under the clients' open connections. The clients
see their server connections cut, a few connection errors while PgBouncer
cannot reach a primary, then writes working again: no acknowledged defer
lost, no job run twice at once, and every worker claiming again within 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.failover import run_failover
from tests.support.pgbouncer import PgBouncer
from tests.support.standby import ReplicatedPair, bouncer_in_front, follow_primary, replicated_pair

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def sync_pair() -> Iterator[ReplicatedPair]:
    with replicated_pair(synchronous=True) as pair:
        yield pair


@pytest.fixture
def bouncer(sync_pair: ReplicatedPair) -> Iterator[PgBouncer]:
    with bouncer_in_front(sync_pair) as bouncer:
        yield bouncer


@pytest.mark.timeout(400)
def test_a_failover_behind_pgbouncer_loses_no_defer_and_every_worker_resumes_within_10_s(
    sync_pair: ReplicatedPair, bouncer: PgBouncer, tmp_path: Path
) -> None:
    report = run_failover(
        sync_pair,
        tmp_path,
        # The one option the README gives for poolers in transaction mode.
        front=lambda database: bouncer.url(database) + "?prepare_threshold=none",
        on_promoted=lambda: follow_primary(bouncer, sync_pair),
    )
    print("\n".join(["", "failover behind PgBouncer (synchronous standby):", *report.lines()]))
    logs = "\n".join(f"--- {name}\n{text[-1500:]}" for name, text in report.logs.items())
    logs += f"\n--- pgbouncer\n{bouncer.log()[-3000:]}"
    assert report.died == [], logs
    assert report.lost_defers == []
    assert report.overlaps == 0, logs
    assert report.unfinished == 0, logs
    assert len(report.resumed_after) == 4, logs
    assert all(t is not None and t < 10 for t in report.resumed_after), (report.resumed_after, logs)
