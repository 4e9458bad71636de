"""Flow control's rows per key are forgotten once their key is idle, never while they still count (every driver).

A rate per key keeps a ring of rows per key, and fair sharing a turn per key:
without pruning, a handler keyed by customer grows a row for every customer it
ever saw. ``Retention.prune_flow`` deletes a ring once all its stamps are older
than its period, and a turn once its key has no unfinished job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import func, select

from jobstead.flow import FlowControl, RateLimit
from jobstead.store import Store
from jobstead.store.claims import KEYED_RING
from tests.store.conftest import handler
from tests.store.test_flow import _claim, _defer, _done

PER_CUSTOMER = FlowControl(rate_limit=RateLimit(2, per=10), rate_limit_by="customer_id")


def _ring_rows(store: Store) -> int:
    rings = store.tables.rate_slots
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(rings.c.kind == KEYED_RING)).scalar_one())


def _customers(jobs: list[Any]) -> list[str]:
    return sorted(j.args["customer_id"][:4] for j in jobs)


def test_a_keys_ring_goes_once_every_stamp_is_a_period_old_and_the_rate_still_holds(store: Store, clock: Any) -> None:
    store.registry.publish_handlers([replace(handler("work"), flow=PER_CUSTOMER)])
    long_key = "k" * 250  # its ring is named by a digest: pruned by the longest period there is
    _defer(store, PER_CUSTOMER, [{"customer_id": c} for c in ("a", "a", "a", "b", long_key)])
    assert _customers(_claim(store)) == ["a", "a", "b", "kkkk"]
    assert _ring_rows(store) == 6

    clock.advance(5)
    assert store.retention.prune_flow().rate_rows == 0, "every ring has a start within its period"
    assert _claim(store) == [], "a's window is full: nothing was forgotten"

    clock.advance(4.9)
    _defer(store, PER_CUSTOMER, [{"customer_id": "c"}])
    assert _customers(_claim(store)) == ["c"]
    clock.advance(0.1)  # a, b and the long key: their stamps are a period old; c's is not
    assert store.retention.prune_flow().rate_rows == 6
    assert _ring_rows(store) == 2, "c's ring stays"

    _defer(store, PER_CUSTOMER, [{"customer_id": c} for c in ("a", "a", "c", "c")])
    assert _customers(_claim(store)) == ["a", "a", "c"], "a's new window allows 2 (its rows made anew); c's 1 more"
    assert _claim(store) == []
    clock.advance(10)
    assert _customers(_claim(store)) == ["a", "c"]


def test_a_ring_with_one_recent_stamp_is_kept_whole(store: Store, clock: Any) -> None:
    store.registry.publish_handlers([replace(handler("work"), flow=PER_CUSTOMER)])
    _defer(store, PER_CUSTOMER, [{"customer_id": "a"} for _ in range(4)])
    assert len(_claim(store)) == 2
    clock.advance(10)
    assert len(_claim(store, limit=1)) == 1, "one row restamped now, the other still a period old"
    assert store.retention.prune_flow().rate_rows == 0
    assert len(_claim(store)) == 1, "the free row of the ring that stayed"
    assert _claim(store) == []


def test_a_keys_fair_turn_goes_once_it_has_no_unfinished_job(store: Store) -> None:
    fair = FlowControl(fair_by="customer_id")
    store.registry.publish_handlers([replace(handler("work"), flow=fair)])
    _defer(store, fair, [{"customer_id": c} for c in ("a", "a", "b")] + [{}])
    taken = _claim(store)
    assert len(taken) == 4
    turns = store.tables.fair_turns

    def keys() -> set[str]:
        with store.db.engine.connect() as conn:
            return set(conn.execute(select(turns.c.key)).scalars())

    assert {"a", "b"} <= keys() and len(keys()) == 3, "a, b and the jobs without a key"
    store.leases.complete([_done(store, j) for j in taken if j.args.get("customer_id") != "a"])
    assert store.retention.prune_flow().fair_turns == 2
    assert keys() == {"a"}, "a still has jobs running"

    store.registry.publish_handlers([handler("work")])  # no longer fair: its turns go
    assert store.retention.prune_flow().fair_turns == 1
    assert keys() == set()
