"""The operator through a switchover of its app's PostgreSQL: ``DatabaseUnavailable`` at worst, then healed.

During a failover the operator's pooled connections meet a server that shut
down or no longer takes writes. Every such error must read as the database
being unavailable for a while (a reason its ticks retry), never as a mistake
to be fixed by an edit, and the next try after the new primary is up must
work without a restart (the pool follows the primary).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import SQLAlchemyError

from jobstead_operator.binding import NotReady, unavailable
from jobstead_operator.databases import Databases
from jobstead_operator.reasons import Reason
from jobstead_operator.targets import parse_target
from tests.support.standby import ReplicatedPair, replicated_pair, replication_available

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(not replication_available(), reason="no PostgreSQL server binaries"),
]


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair(synchronous=False) as started:
        yield started


def _turn_read_only(pair: ReplicatedPair) -> None:
    """The primary stops taking writes under open connections (still up, first in the URL); the standby is promoted."""
    pair.set(pair.primary, "default_transaction_read_only", "on")
    time.sleep(1.0)
    pair.promote()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("trap", [ReplicatedPair.switchover, _turn_read_only], ids=["switchover", "turned-read-only"])
def test_a_failover_is_a_recoverable_outage_the_operator_heals_from(pair: ReplicatedPair, trap: object) -> None:
    pair.primary.create_database("shop")
    target = parse_target(pair.url("shop"), schema="opfail", table_prefix=None, where="x")

    async def scenario() -> tuple[list[NotReady], float]:
        pool = Databases(republish_every=3600)
        try:
            database, _ = await pool.use(("JobHandler", "shop", "mailer"), target)
            await pool.ready(database)
            await database.call(database.store.control.pause, "handler", "mailer")  # pooled connections
            await asyncio.to_thread(trap, pair)  # type: ignore[arg-type]
            failures: list[NotReady] = []
            began = time.monotonic()
            while True:  # what a JobHandler's reconcile does at each tick: write its rows
                try:
                    await database.call(database.store.control.resume, "handler", "mailer")
                    return failures, time.monotonic() - began
                except SQLAlchemyError as exc:
                    failures.append(unavailable(target, exc))
                assert time.monotonic() - began < 30, [f.message for f in failures]
                await asyncio.sleep(1)
        finally:
            await pool.close_all()

    failures, healed_after = asyncio.run(scenario())
    assert all(f.reason is Reason.DATABASE_UNAVAILABLE and f.reason.recoverable for f in failures)
    assert len(failures) <= 1, [f.message for f in failures]  # the pool is discarded at the first one
    assert healed_after < 10
    assert not pair.in_recovery(pair.primary)
    done = pair.primary._psql("shop", "SELECT count(*) FROM opfail.jobstead_pauses")
    assert done.returncode == 0 and done.stdout.strip() == b"0", done.stdout + done.stderr
