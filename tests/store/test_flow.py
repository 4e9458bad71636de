"""Flow control in the store, on every driver: what a handler row stores, and the keys a job carries.

The settings are written by the code's publish and by the operator's
``put_handler`` alike, and read back as the same ``FlowControl``; a job's keys
are read from its arguments when it is deferred (one INSERT for a
``defer_many`` whose jobs have different keys) and stored with it, so the claim
compares columns and never parses arguments.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from sqlalchemy import ColumnElement, Text, and_, case, cast, event, func, literal, select
from sqlalchemy.exc import OperationalError

from jobstead.flow import NO_FLOW_CONTROL, FlowControl, RateLimit
from jobstead.status import AttemptOutcome, JobStatus
from jobstead.store import Completion, HandOff, Store
from jobstead.store.new_jobs import JobDefaults, new_jobs
from tests.store.conftest import handler

EVERY_CONTROL = FlowControl(
    rate_limit=RateLimit(5, per=0.5),
    rate_limit_by="customer_id",
    rate_limits=("stripe", "github"),
    concurrency_by="account",
    concurrency_per_key=2,
    sequence_by="tenant",
    sequence_on_failure="continue",
    fair_by="customer_id",
)


def test_a_handlers_flow_control_is_stored_and_read_back_from_code_and_operator(store: Store) -> None:
    store.registry.publish_handlers(
        [replace(handler("code"), flow=EVERY_CONTROL), handler("plain"), replace(handler("crd"), source="crd")]
    )
    store.registry.put_handler(replace(handler("crd"), source="crd", flow=FlowControl(sequence_by="account")))
    found = store.registry.handlers()
    assert found["code"].flow == EVERY_CONTROL
    assert found["plain"].flow is NO_FLOW_CONTROL or found["plain"].flow == NO_FLOW_CONTROL
    assert found["crd"].flow == FlowControl(sequence_by="account")

    # code publishing again keeps the operator's settings, and follows its own
    store.registry.publish_handlers([replace(handler("crd"), flow=EVERY_CONTROL), handler("code")])
    found = store.registry.handlers()
    assert found["crd"].flow == FlowControl(sequence_by="account")
    assert found["code"].flow == NO_FLOW_CONTROL, "a control removed from the code is gone from the row"


def test_shared_rate_limits_are_stored_by_name(store: Store) -> None:
    assert store.registry.rate_limits() == {}
    store.registry.publish_rate_limits({"stripe": RateLimit(100, per=1), "github": RateLimit(5000, per=3600)})
    store.registry.publish_rate_limits({"stripe": RateLimit(80, per=1)})
    assert store.registry.rate_limits() == {"stripe": RateLimit(80, per=1), "github": RateLimit(5000, per=3600)}


def _keys(store: Store) -> dict[Any, tuple[str | None, ...]]:
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.id, jobs.c.rate_key, jobs.c.concurrency_key, jobs.c.sequence_key, jobs.c.fair_key)
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_each_job_stores_the_keys_read_from_its_own_arguments(store: Store) -> None:
    defaults = JobDefaults(flow=EVERY_CONTROL)
    calls = [{"customer_id": f"c{i}", "account": i % 2} for i in range(4)] + [{"account": None}]
    many = store.enqueue.insert(new_jobs("work", calls, defaults, clock=store.clock))
    (one,) = store.enqueue.insert(new_jobs("work", [{"customer_id": "solo"}], defaults, clock=store.clock))
    (keyed,) = store.enqueue.insert(
        new_jobs("work", [{"customer_id": "k", "account": 5}], defaults, clock=store.clock, key="dedup")
    )
    (plain,) = store.enqueue.insert(new_jobs("work", [{"customer_id": "c"}], JobDefaults(), clock=store.clock))
    keys = _keys(store)
    assert [keys[r.id] for r in many] == [
        ("c0", "0", None, "c0"),
        ("c1", "1", None, "c1"),
        ("c2", "0", None, "c2"),
        ("c3", "1", None, "c3"),
        (None, None, None, None),
    ]
    assert keys[one.id] == ("solo", None, None, "solo")
    assert keys[keyed.id] == ("k", "5", None, "k")
    assert keys[plain.id] == (None, None, None, None)
    with store.db.engine.begin() as conn:  # in the caller's transaction too
        (in_tx,) = store.enqueue.insert(
            new_jobs("work", [{"customer_id": "tx", "account": "a"}], defaults, clock=store.clock), conn
        )
    assert _keys(store)[in_tx.id] == ("tx", "a", None, "tx")


def test_a_caller_without_the_code_reads_the_keys_from_the_handlers_row(store: Store) -> None:
    """``jobstead defer`` and a cron's fire take the handler's defaults from its row: its keys too."""
    store.registry.publish_handlers([replace(handler("work"), flow=FlowControl(sequence_by="account"))])
    with store.db.engine.connect() as conn:
        defaults = store.enqueue.defaults_of(conn, "work")
    assert defaults.flow == FlowControl(sequence_by="account")
    (job,) = store.enqueue.insert(new_jobs("work", [{"account": 42}], defaults, clock=store.clock))
    assert _keys(store)[job.id] == (None, None, "42", None)


# -- limits per key ------------------------------------------------------------------------------


def _defer(store: Store, flow: FlowControl, calls: list[dict[str, Any]], **options: Any) -> None:
    store.enqueue.insert(new_jobs("work", calls, JobDefaults(flow=flow), clock=store.clock, **options))


def _claim(store: Store, worker: str = "w1", limit: int = 50, queues: list[str] | None = None) -> list[Any]:
    return store.claims.claim(worker_id=worker, handlers=["work"], queues=queues, limit=limit, lease_seconds=30)


def _running_per_key(store: Store, column: str) -> dict[str | None, int]:
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(jobs.c[column]).where(jobs.c.status == "running")).scalars().all()
    found: dict[str | None, int] = {}
    for key in rows:
        found[key] = found.get(key, 0) + 1
    return found


def test_a_limit_per_key_caps_each_key_with_the_global_limit_at_the_same_time(store: Store) -> None:
    flow = FlowControl(concurrency_by="customer_id", concurrency_per_key=2)
    store.registry.publish_handlers([replace(handler("work", concurrency=5), flow=flow)])
    _defer(store, flow, [{"customer_id": "big"} for _ in range(20)])
    _defer(store, flow, [{"customer_id": c} for c in ("a", "b") for _ in range(3)] + [{}, {}, {}])

    first = _claim(store, "w1", limit=50)
    assert len(first) == 5, "the global limit"
    assert all(n <= 2 for n in _running_per_key(store, "concurrency_key").values())
    assert _claim(store, "w2") == [], "the global limit holds for every claimer"

    store.leases.complete([_done(store, first[0])])
    again = _claim(store, "w2")
    assert len(again) == 1
    per_key = _running_per_key(store, "concurrency_key")
    assert all(n <= 2 for n in per_key.values()) and sum(per_key.values()) == 5


def test_a_limit_per_key_alone_lets_every_key_run_its_share_and_null_is_a_key_of_its_own(store: Store) -> None:
    flow = FlowControl(concurrency_by="customer_id", concurrency_per_key=2)
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    _defer(store, flow, [{"customer_id": "big"} for _ in range(20)])
    _defer(store, flow, [{"customer_id": c} for c in ("a", "b") for _ in range(3)] + [{}, {}, {}])
    taken = _claim(store, "w1", limit=50) + _claim(store, "w2", limit=50)
    assert _running_per_key(store, "concurrency_key") == {"big": 2, "a": 2, "b": 2, None: 2}
    assert len(taken) == 8 and _claim(store, "w3") == []


def test_a_limit_per_tenant_by_concurrency_by(store: Store) -> None:
    flow = FlowControl(concurrency_by="tenant", concurrency_per_key=1)
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    for tenant in ("acme", "acme", "globex", None, None):
        _defer(store, flow, [{}], tenant=tenant)
    _claim(store, "w1", limit=50)
    assert _running_per_key(store, "tenant") == {"acme": 1, "globex": 1, None: 1}


def test_a_limit_per_key_counts_across_queues_in_one_claim(store: Store) -> None:
    flow = FlowControl(concurrency_by="customer_id", concurrency_per_key=2)
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    _defer(store, flow, [{"customer_id": "a"}] * 3, queue="q1")
    _defer(store, flow, [{"customer_id": "a"}] * 3, queue="q2")
    assert len(_claim(store, "w1", queues=["q1", "q2"])) == 2
    assert _running_per_key(store, "concurrency_key") == {"a": 2}


def _done(store: Store, job: Any) -> Completion:
    return Completion(
        job_id=job.id,
        owner="w1",
        attempt=job.attempts,
        outcome=AttemptOutcome.SUCCEEDED,
        status=JobStatus.SUCCEEDED,
        finished_at=store.clock(),
    )


# -- the global limit's slots --------------------------------------------------------------------


def _slots(store: Store, name: str = "work") -> dict[int, tuple[Any, Any]]:
    slots = store.tables.slots
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(slots.c.n, slots.c.job_id, slots.c.attempt).where(slots.c.handler == name))
        return {int(n): (job_id, attempt) for n, job_id, attempt in rows}


def test_a_handler_row_has_as_many_slots_as_its_global_limit_whoever_writes_it(store: Store) -> None:
    store.registry.publish_handlers([handler("work", concurrency=3), handler("free")])
    assert sorted(_slots(store)) == [0, 1, 2] and _slots(store, "free") == {}
    store.registry.publish_handlers([handler("work", concurrency=5)])
    assert sorted(_slots(store)) == [0, 1, 2, 3, 4]
    store.registry.put_handler(replace(handler("work", concurrency=2), source="crd"))
    assert sorted(_slots(store)) == [0, 1]
    store.registry.publish_handlers([handler("work", concurrency=9)])
    assert sorted(_slots(store)) == [0, 1], "a code publish leaves the operator's limit alone"
    store.registry.put_handler(replace(handler("work"), source="crd"))
    assert _slots(store) == {}
    store.registry.put_handler(replace(handler("work", concurrency=1), source="crd"))
    assert store.registry.remove_handler("work", source="crd") and _slots(store) == {}


def test_a_slot_is_free_again_however_its_job_stops_running(store: Store, clock: Any) -> None:
    store.registry.publish_handlers([handler("work", concurrency=2)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(10)])
    a, b = _claim(store, limit=5)
    assert {job_id for job_id, _ in _slots(store).values()} == {a.id, b.id}
    assert _claim(store) == []

    store.leases.complete([_done(store, a)])  # succeeded
    (c,) = _claim(store)
    store.leases.complete(  # failed, to be retried later: not running, so its slot is free
        [replace(_done(store, b), outcome=AttemptOutcome.FAILED, status=JobStatus.RETRYING, run_at=clock.now)]
    )
    (d,) = _claim(store)
    assert d.id != b.id or d.attempts == 2
    clock.advance(60)  # c's and d's leases expire: the rescue gives them back
    assert sorted(store.leases.rescue_expired()) == sorted([c.id, d.id])
    again = _claim(store, limit=5)
    assert len(again) == 2
    assert store.leases.release(again[0].id, "w1", again[0].attempts)
    assert len(_claim(store, limit=5)) == 1, "a job given back holds no slot"
    assert _running(store) == 2


def _running(store: Store) -> int:
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(jobs.c.status == "running")).scalar_one())


@pytest.mark.parametrize("hand_off", [False, True], ids=["claims", "hand-offs"])
def test_claimers_racing_for_slots_never_run_more_than_the_limit(store: Store, hand_off: bool) -> None:
    store.registry.publish_handlers([handler("work", concurrency=3)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(120)])
    peaks: list[int] = []
    errors: list[BaseException] = []
    ran: list[int] = []

    def work(worker: str) -> None:
        try:
            jobs: list[Any] = []
            for _ in range(200):
                if not jobs:
                    jobs = _claim(store, worker, limit=2)
                peaks.append(_running(store))
                if jobs:
                    ran.extend(j.id for j in jobs)
                    done = [replace(_done(store, j), owner=worker) for j in jobs]
                    request = _hand_off(worker, 2) if hand_off else None
                    store.leases.complete(done, request)
                    jobs = request.claimed if request is not None else []
                elif _remaining(store) == 0:
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert max(peaks) <= 3 and _remaining(store) == 0
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 120, "each job ran once"


def _hand_off(worker: str = "w1", limit: int = 50) -> HandOff:
    return HandOff(worker_id=worker, handlers=["work"], queues=None, limit=limit, lease_seconds=30)


def test_a_completion_hands_the_slots_it_frees_to_the_workers_next_jobs(store: Store) -> None:
    store.registry.publish_handlers([handler("work", concurrency=2)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(5)])
    a, b = _claim(store, limit=5)
    assert _claim(store, "w2") == []
    request = _hand_off(limit=5)
    assert store.leases.complete([_done(store, a), _done(store, b)], request) == set()
    c, d = request.claimed
    assert {c.id, d.id}.isdisjoint({a.id, b.id}) and _running(store) == 2
    assert {job_id for job_id, _ in _slots(store).values()} == {c.id, d.id}, "the same slots, naming the next jobs"
    assert _claim(store, "w2") == [], "nobody else saw them free"
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        owners = set(conn.execute(select(jobs.c.lease_owner).where(jobs.c.status == "running")).scalars())
    assert owners == {"w1"}

    # a completion whose lease is gone still hands off the slots that are free
    (e,) = [j for j in store.queries.list_jobs() if j.status is JobStatus.QUEUED]
    request = _hand_off(limit=5)
    assert store.leases.complete([replace(_done(store, c), owner="someone-else")], request) == {c.id}
    assert request.claimed == [] and _running(store) == 2, "c still runs: its slot is not free"
    request = _hand_off(limit=5)
    store.leases.complete([_done(store, c)], request)
    assert [j.id for j in request.claimed] == [e.id] and _running(store) == 2


def test_a_hand_off_claims_nothing_of_a_paused_handler_and_within_its_limit(store: Store) -> None:
    store.registry.publish_handlers([handler("work", concurrency=3)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(6)])
    a, b = _claim(store, limit=2)
    store.control.pause("handler", "work")
    request = _hand_off(limit=5)
    store.leases.complete([_done(store, a)], request)
    assert request.claimed == [] and _running(store) == 1
    store.control.resume("handler", "work")
    request = _hand_off(limit=5)
    store.leases.complete([_done(store, b)], request)
    assert len(request.claimed) == 3 and _running(store) == 3, "its own slot and the free ones: 3 at most"


def _statements_of(store: Store, call: Callable[[], Any]) -> tuple[Any, int]:
    """What ``call`` returned, and how many statements it sent through SQLAlchemy (BEGIN and COMMIT
    are not statements)."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(store.db.engine, "before_cursor_execute", count)
    try:
        return call(), len(sent)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", count)


def test_a_limited_handlers_claims_are_one_statement_and_still_see_every_change_at_the_next(store: Store) -> None:
    """Once a claim of a handler with a global limit alone saw nothing else in its way, its claims and
    hand-offs are one statement where the database can (``Claims._slotted_alone``), carrying the
    pause and limit read: a pause, a rate or a lifted limit set meanwhile still counts from the next."""
    store.registry.publish_handlers([handler("work", concurrency=2)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(12)])
    one = 1 if store.db.driver.one_statement_claim else None
    (a,) = _claim(store, limit=1)  # the full claim: it finds only the slots in the way
    claimed, sent = _statements_of(store, lambda: _claim(store, limit=1))
    (b,) = claimed
    # (At most: on PostgreSQL it goes to the driver's connection directly, which no event sees.)
    assert one is None or sent <= one, f"a claim of the limited handler took {sent} statements"
    request = _hand_off(limit=5)
    _, sent = _statements_of(store, lambda: store.leases.complete([_done(store, a)], request))
    assert len(request.claimed) == 1 and _running(store) == 2
    # The full claim beside the completion was 3 (the read, the claim, the completion); on PostgreSQL
    # the completion and the claim go to the driver's connection together, in one round trip.
    assert one is None or sent <= 2, f"a completion with its hand-off took {sent} statements"
    (c,) = request.claimed

    store.control.pause("handler", "work")
    request = _hand_off(limit=5)
    store.leases.complete([_done(store, b)], request)
    assert request.claimed == [] and _claim(store) == [] and _running(store) == 1, "the pause counts at once"
    store.control.resume("handler", "work")

    rated = replace(handler("work", concurrency=2), flow=FlowControl(rate_limit=RateLimit(1, per=3600)))
    store.registry.publish_handlers([rated])
    assert len(_claim(store)) == 1 and _running(store) == 2, "one start within the new rate, one free slot"
    request = _hand_off(limit=5)
    store.leases.complete([_done(store, c)], request)
    assert request.claimed == [] and _running(store) == 1, "a slot is free, but the rate has no room"

    store.registry.publish_handlers([handler("work")])  # the limit and the rate lifted: slots gone
    assert len(_claim(store, limit=20)) == 8 and _running(store) == 9, "every job left, no longer within 2"


def test_completions_sent_with_their_claim_stay_written_when_the_write_after_them_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the writes of jobs in no batch and no workflow go with the hand-off's claim in a
    transaction of their own (one round trip), the others are written after it: if that fails,
    the first transaction stands, and says so (``made``, ``written``), so the worker runs the jobs
    it claimed and writes only the rest again."""
    store.registry.publish_handlers([handler("work", concurrency=3)])
    _defer(store, NO_FLOW_CONTROL, [{"n": i} for i in range(6)])
    a, b = _claim(store, limit=2)

    def failing(*_args: Any) -> Any:
        raise OperationalError("UPDATE", {}, Exception("the server went away"))

    monkeypatch.setattr(store.leases, "_write", failing)
    request = _hand_off(limit=5)
    with pytest.raises(OperationalError):  # b's attempt is not the one running: written the usual way
        store.leases.complete([_done(store, a), replace(_done(store, b), attempt=b.attempts + 1)], request)
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        status = dict(conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_([a.id, b.id]))).all())
    if store.db.driver.one_statement_claim:
        assert request.made and request.written == {a.id} and status == {a.id: "succeeded", b.id: "running"}
        assert len(request.claimed) == 2 and _running(store) == 3, "a's slot and the free one, taken for good"
    else:
        assert not request.made and request.claimed == [] and status == {a.id: "running", b.id: "running"}


def _remaining(store: Store) -> int:
    jobs = store.tables.jobs
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(jobs.c.status != "succeeded")).scalar_one())


# -- rate limits ---------------------------------------------------------------------------------


def _starts(store: Store, handler_name: str | None = None) -> list[Any]:
    jobs = store.tables.jobs
    query = select(jobs.c.started_at).where(jobs.c.started_at.is_not(None))
    if handler_name is not None:
        query = query.where(jobs.c.handler == handler_name)
    with store.db.engine.connect() as conn:
        return sorted(conn.execute(query).scalars())


def _finish_all(store: Store, jobs: list[Any], worker: str = "w1") -> None:
    store.leases.complete([replace(_done(store, j), owner=worker) for j in jobs])


def test_a_rate_limit_allows_n_starts_per_window_and_held_jobs_stay_queued(store: Store, clock: Any) -> None:
    rate = FlowControl(rate_limit=RateLimit(3, per=10))
    store.registry.publish_handlers([replace(handler("work"), flow=rate)])
    _defer(store, rate, [{"n": i} for i in range(10)])
    first = _claim(store, limit=50)
    assert len(first) == 3
    _finish_all(store, first)
    assert _claim(store, "w2") == [], "finished or not, three started in this window"
    held = store.queries.get_job(first[-1].id + 1)
    assert held is not None and held.status == JobStatus.QUEUED and held.attempts == 0, "no attempt spent"
    clock.advance(9.9)
    assert _claim(store) == []
    clock.advance(0.1)
    assert len(_claim(store, limit=2)) == 2, "the window slides: each row frees a period after its start"
    assert len(_claim(store, limit=5)) == 1
    clock.advance(5)
    assert _claim(store) == []


def test_a_rate_limit_holds_with_the_global_limit(store: Store, clock: Any) -> None:
    flow = FlowControl(rate_limit=RateLimit(5, per=1))
    store.registry.publish_handlers([replace(handler("work", concurrency=2), flow=flow)])
    _defer(store, flow, [{"n": i} for i in range(20)])
    started = []
    for _ in range(6):
        jobs = _claim(store, limit=50)
        assert len(jobs) <= 2
        started += jobs
        _finish_all(store, jobs)
    assert len(started) == 5, "five per second, however fast slots free"
    clock.advance(1)
    assert len(_claim(store, limit=50)) == 2


def test_a_shared_rate_limit_counts_the_starts_of_every_handler_naming_it(store: Store, clock: Any) -> None:
    store.registry.publish_rate_limits({"stripe": RateLimit(4, per=60)})
    shared = FlowControl(rate_limits=("stripe",))
    store.registry.publish_handlers(
        [replace(handler("charge"), flow=shared), replace(handler("refund"), flow=shared), handler("other")]
    )
    for name in ("charge", "refund", "other"):
        store.enqueue.insert(new_jobs(name, [{"n": i} for i in range(5)], JobDefaults(), clock=store.clock))
    charges = store.claims.claim(worker_id="w1", handlers=["charge"], queues=None, limit=3, lease_seconds=30)
    both = store.claims.claim(
        worker_id="w2", handlers=["charge", "refund", "other"], queues=None, limit=50, lease_seconds=30
    )
    assert len(charges) == 3
    assert sorted(j.handler for j in both if j.handler != "other") in (["charge"], ["refund"])
    assert sum(j.handler == "other" for j in both) == 5, "a handler without the limit is not held by it"
    clock.advance(60)
    assert len(store.claims.claim(worker_id="w3", handlers=["refund"], queues=None, limit=50, lease_seconds=30)) == 4


def test_a_paused_handler_spends_no_rate(store: Store, clock: Any) -> None:
    rate = FlowControl(rate_limit=RateLimit(2, per=60))
    store.registry.publish_handlers([replace(handler("work"), flow=rate)])
    _defer(store, rate, [{"n": i} for i in range(5)])
    store.control.pause("handler", "work")
    assert _claim(store) == []
    store.control.resume("handler", "work")
    assert len(_claim(store)) == 2


def test_claimers_racing_for_a_rate_never_start_more_than_it_allows(store: Store) -> None:
    rate = FlowControl(rate_limit=RateLimit(7, per=3600))
    store.registry.publish_handlers([replace(handler("work"), flow=rate)])
    _defer(store, rate, [{"n": i} for i in range(40)])
    got: list[int] = []

    def work(worker: str) -> None:
        for _ in range(20):
            got.extend(j.id for j in _claim(store, worker, limit=2))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == len(set(got)) == 7


# -- sequences -----------------------------------------------------------------------------------


def _seq(store: Store, on_failure: str = "hold") -> FlowControl:
    flow = FlowControl(sequence_by="account", sequence_on_failure=on_failure)  # type: ignore[arg-type]
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    return flow


def _fail(store: Store, job: Any, *, for_good: bool, clock: Any) -> None:
    status = JobStatus.FAILED if for_good else JobStatus.RETRYING
    store.leases.complete(
        [
            replace(
                _done(store, job),
                outcome=AttemptOutcome.FAILED,
                status=status,
                run_at=None if for_good else clock.now + timedelta(seconds=30),
            )
        ]
    )


def test_a_sequence_starts_one_job_of_a_key_at_a_time_in_defer_order(store: Store) -> None:
    flow = _seq(store)
    _defer(store, flow, [{"account": a, "n": n} for n in range(3) for a in ("a", "b")] + [{"n": 9}, {"n": 10}])
    first = _claim(store, limit=50)
    keys = sorted((j.args.get("account", ""), j.args["n"]) for j in first)
    assert keys == [("", 9), ("", 10), ("a", 0), ("b", 0)], "one per key; jobs without a key are in no sequence"
    assert _claim(store, "w2") == []
    store.leases.complete([_done(store, j) for j in first if j.args.get("account") == "a"])
    (second,) = _claim(store, "w2")
    assert (second.args["account"], second.args["n"]) == ("a", 1)


def test_a_retrying_job_holds_its_place_and_a_failed_one_holds_its_sequence(store: Store, clock: Any) -> None:
    flow = _seq(store)
    _defer(store, flow, [{"account": "a", "n": n} for n in range(3)])
    (first,) = _claim(store)
    _fail(store, first, for_good=False, clock=clock)
    assert _claim(store) == [], "retrying: its place is held"
    clock.advance(30)
    (again,) = _claim(store)
    assert again.id == first.id and again.attempts == 2
    _fail(store, again, for_good=True, clock=clock)
    assert _claim(store) == [], "failed: the sequence waits for it"
    store.control.retry(first.id)
    (retried,) = _claim(store)
    assert retried.id == first.id
    store.leases.complete([_done(store, retried)])
    assert [j.args["n"] for j in _claim(store)] == [1]


def test_a_waiting_job_says_which_job_holds_its_sequence(store: Store, clock: Any) -> None:
    flow = _seq(store)
    _defer(store, flow, [{"account": "a", "n": n} for n in range(3)] + [{"n": 9}])
    ids = sorted(_keys(store))
    assert [store.claims.held_by(i) for i in ids] == [None, ids[0], ids[0], None]
    (first,) = [j for j in _claim(store) if j.args.get("account") == "a"]
    _fail(store, first, for_good=True, clock=clock)
    assert store.claims.held_by(ids[2]) == ids[0], "a failed job holds its sequence"
    assert store.claims.held_by(ids[0]) is None


def test_a_deleted_failed_job_lets_its_sequence_go_on(store: Store, clock: Any) -> None:
    flow = _seq(store)
    _defer(store, flow, [{"account": "a", "n": n} for n in range(2)])
    (first,) = _claim(store)
    _fail(store, first, for_good=True, clock=clock)
    assert _claim(store) == []
    store.control.delete(first.id)
    assert [j.args["n"] for j in _claim(store)] == [1]


def test_sequence_on_failure_continue_goes_on_after_a_failure(store: Store, clock: Any) -> None:
    flow = _seq(store, "continue")
    _defer(store, flow, [{"account": "a", "n": n} for n in range(2)])
    (first,) = _claim(store)
    _fail(store, first, for_good=False, clock=clock)
    assert _claim(store) == [], "a retrying job holds its place in either mode"
    clock.advance(30)
    (again,) = _claim(store)
    _fail(store, again, for_good=True, clock=clock)
    assert [j.args["n"] for j in _claim(store)] == [1]


def _pause_on(store: Store, job_id: int, seconds: float) -> ColumnElement[bool]:
    """True, after a pause when the row evaluated is ``job_id``'s: a claim statement held mid-scan."""
    jobs = store.tables.jobs
    if store.db.engine.dialect.name == "postgresql":
        pause: ColumnElement[Any] = func.length(cast(func.pg_sleep(seconds), Text))  # void, as text: ''
    else:
        pause = func.sleep(seconds)  # 0
    return case((jobs.c.id == job_id, pause), else_=literal(0)) == 0


def test_jobs_of_one_key_committed_while_a_claim_runs_still_start_one_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs of one key, deferred together, committed while a claim statement is under way.

    On MariaDB the claim's locking read saw them, but its test for an earlier job of the same key
    read the statement's snapshot, which lacked both: it took the two, and they ran at once
    (``tests/multiprocess/test_sequence_kills.py``, once in a full run).
    """
    if store.db.engine.dialect.name == "sqlite":
        pytest.skip("one writer at a time: nothing commits while a claim runs")
    from jobstead.store.claims import Claims

    flow = _seq(store)
    _defer(store, flow, [{"account": "a", "n": 0}])
    [first] = store.queries.list_jobs()
    with store.db.engine.connect() as late:
        deferring = late.begin()
        store.enqueue.insert(
            new_jobs("work", [{"account": "b", "n": n} for n in (1, 2)], JobDefaults(flow=flow), clock=store.clock),
            connection=late,
        )
        real = Claims._first_of_its_key
        monkeypatch.setattr(
            Claims, "_first_of_its_key", lambda self, seq: and_(real(self, seq), _pause_on(store, first.id, 1.0))
        )
        commit = threading.Timer(0.3, deferring.commit)  # while the claim pauses on the first job
        commit.start()
        taken = _claim(store)
        commit.join()
    monkeypatch.undo()
    of_b = [j.args["n"] for j in taken if j.args["account"] == "b"]
    assert len(of_b) <= 1, f"two jobs of one key started together: {of_b}"
    later = [(j.args["account"], j.args["n"]) for j in _claim(store, "w2")]
    assert later == ([] if of_b else [("b", 1)]), "the next of the key is the first deferred"


def test_a_sequence_with_a_limit_per_key_and_a_global_limit(store: Store) -> None:
    flow = FlowControl(sequence_by="account", concurrency_by="region", concurrency_per_key=1)
    store.registry.publish_handlers([replace(handler("work", concurrency=3), flow=flow)])
    _defer(store, flow, [{"account": a, "region": "eu", "n": n} for a in ("a", "b") for n in range(2)])
    _defer(store, flow, [{"account": a, "region": "us", "n": n} for a in ("c", "d") for n in range(2)])
    taken = _claim(store, limit=50)
    assert sorted((j.args["region"], j.args["n"]) for j in taken) == [("eu", 0), ("us", 0)]


# -- what stats show -----------------------------------------------------------------------------


def test_each_limit_is_shown_with_how_much_of_it_is_in_use(store: Store, clock: Any) -> None:
    store.registry.publish_rate_limits({"stripe": RateLimit(10, per=1)})
    flow = FlowControl(rate_limit=RateLimit(5, per=60), concurrency_by="customer_id", concurrency_per_key=2)
    store.registry.publish_handlers(
        [
            replace(handler("work", concurrency=4), flow=flow),
            replace(handler("charge"), flow=FlowControl(rate_limits=("stripe",))),
        ]
    )
    _defer(store, flow, [{"customer_id": "a"}] * 3 + [{"customer_id": "b"}])
    store.enqueue.insert(new_jobs("charge", [{"n": 1}], JobDefaults(), clock=store.clock))
    _claim(store, limit=50)
    store.claims.claim(worker_id="w1", handlers=["charge"], queues=None, limit=5, lease_seconds=30)
    use = {(u.handler, u.limit): (u.in_use, u.of, u.per) for u in store.registry.limit_use()}
    assert use == {
        ("work", "concurrency"): (3, 4, None),
        ("work", "concurrency_per_key"): (2, 2, None),
        ("work", "rate_limit"): (3, 5, 60.0),
        (None, "rate_limits:stripe"): (1, 10, 1.0),
    }
    clock.advance(1)
    assert {u.limit: u.in_use for u in store.registry.limit_use()}["rate_limits:stripe"] == 0, "a period later"


def test_a_rate_per_key_gives_each_key_its_own_window(store: Store, clock: Any) -> None:
    rate = FlowControl(rate_limit=RateLimit(2, per=10), rate_limit_by="customer_id")
    store.registry.publish_handlers([replace(handler("work"), flow=rate)])
    _defer(store, rate, [{"customer_id": "big"} for _ in range(10)])
    _defer(store, rate, [{"customer_id": c} for c in ("a", "b") for _ in range(3)] + [{}, {}, {}])
    first = _claim(store, limit=50)
    per_key: dict[Any, int] = {}
    for job in first:
        per_key[job.args.get("customer_id")] = per_key.get(job.args.get("customer_id"), 0) + 1
    assert per_key == {"big": 2, "a": 2, "b": 2, None: 2}, "two per key per window; no key: a key of its own"
    _finish_all(store, first)
    assert _claim(store, "w2") == []
    clock.advance(10)
    assert len(_claim(store, limit=50)) == 5, "a window later: big 2, and the last of a, b and no key"


def test_a_rate_per_tenant_with_a_global_limit(store: Store, clock: Any) -> None:
    rate = FlowControl(rate_limit=RateLimit(1, per=60), rate_limit_by="tenant")
    store.registry.publish_handlers([replace(handler("work", concurrency=2), flow=rate)])
    for tenant in ("acme", "acme", "globex", "globex", "initech"):
        _defer(store, rate, [{}], tenant=tenant)
    taken = _claim(store, limit=50)
    assert len(taken) == 2 and len({j.tenant for j in taken}) == 2
    _finish_all(store, taken)
    again = _claim(store, limit=50)
    assert [j.tenant for j in again] == ["initech"], "the other two tenants spent their window"


def test_claimers_racing_for_a_rate_per_key_never_exceed_it(store: Store) -> None:
    rate = FlowControl(rate_limit=RateLimit(3, per=3600), rate_limit_by="customer_id")
    store.registry.publish_handlers([replace(handler("work"), flow=rate)])
    _defer(store, rate, [{"customer_id": c} for c in ("a", "b") for _ in range(20)])
    got: list[Any] = []

    def work(worker: str) -> None:
        for _ in range(15):
            got.extend(_claim(store, worker, limit=2))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len({j.id for j in got}) == len(got) == 6
    assert sorted(j.args["customer_id"] for j in got) == ["a", "a", "a", "b", "b", "b"]


# -- fair sharing --------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_fair_sharing_goes_round_the_keys_whatever_order_they_were_deferred_in(store: Store, batch: int) -> None:
    flow = FlowControl(fair_by="customer")
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    for customer in ("A", "B", "C"):  # in bursts: all of A first, then B, then C
        _defer(store, flow, [{"customer": customer, "n": n} for n in range(40)])
    started: list[str] = []
    while len(started) < 90:
        jobs = sorted(_claim(store, limit=batch), key=lambda j: j.id)
        assert jobs
        started += [j.args["customer"] for j in jobs]
        _finish_all(store, jobs)
    for i in range(len(started) - 30):
        window = started[i : i + 30]
        assert all(6 <= window.count(c) <= 14 for c in "ABC"), (i, window)


def test_fair_sharing_by_tenant_serves_jobs_without_one_as_a_group(store: Store) -> None:
    flow = FlowControl(fair_by="tenant")
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    _defer(store, flow, [{"n": n} for n in range(5)], tenant="acme")
    _defer(store, flow, [{"n": n} for n in range(5)])
    _defer(store, flow, [{"n": n} for n in range(5)], tenant="globex")
    jobs = _claim(store, limit=3)
    assert sorted(str(j.tenant) for j in jobs) == ["None", "acme", "globex"]


# -- the claim's time ----------------------------------------------------------------------------

#: One handler per way a claim can go: no control (a transaction, then the one statement where the
#: driver has it), a global limit (slots), a rate, a rate per key, a limit per key, fair sharing.
CLAIM_PATHS = {
    "unlimited": (None, NO_FLOW_CONTROL),
    "global limit": (2, NO_FLOW_CONTROL),
    "rate": (None, FlowControl(rate_limit=RateLimit(3, per=10))),
    "rate per key": (None, FlowControl(rate_limit=RateLimit(3, per=10), rate_limit_by="customer_id")),
    "limit per key": (5, FlowControl(concurrency_by="customer_id", concurrency_per_key=1)),
    "fair": (None, FlowControl(fair_by="customer_id")),
}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _stamps(store: Store) -> list[datetime]:
    rings = store.tables.rate_slots
    with store.db.engine.connect() as conn:
        return [_aware(t) for t in conn.execute(select(rings.c.used_at).where(rings.c.used_at.is_not(None))).scalars()]


class _Hold(Protocol):
    """Something a claim waits for; called with the claiming thread, it moves the clock on and lets go."""

    moment: datetime | None

    def __call__(self, thread: threading.Thread, clock: Any) -> None: ...


def _claimed_late(store: Store, clock: Any, hold: Callable[[], _Hold]) -> tuple[list[Any], datetime]:
    """A claim held up by ``hold`` while the clock moves on by 5 s.

    Returns the jobs it claimed and the moment it was let go: what it stamped
    must not be earlier than that."""
    claimed: list[Any] = []
    release = hold()
    thread = threading.Thread(target=lambda: claimed.extend(_claim(store, limit=1)))
    thread.start()
    release(thread, clock)
    thread.join(30)
    assert not thread.is_alive() and release.moment is not None
    return claimed, release.moment


class _StalledCheckout:
    """Every pooled connection the claiming thread checks out waits until the clock moved on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entered, self.go = threading.Event(), threading.Event()
        self.test = threading.current_thread()
        self.moment: datetime | None = None
        event.listen(store.db.engine, "checkout", self.stall)

    def stall(self, *_: Any) -> None:
        if threading.current_thread() is not self.test and not self.go.is_set():
            self.entered.set()
            self.go.wait(30)

    def __call__(self, thread: threading.Thread, clock: Any) -> None:
        assert self.entered.wait(30), "the claim checked out a connection"
        clock.advance(5)
        self.moment = clock()
        self.go.set()
        thread.join(30)
        event.remove(self.store.db.engine, "checkout", self.stall)


@pytest.mark.parametrize("path", list(CLAIM_PATHS))
def test_a_claim_reads_its_time_once_it_holds_its_connection(store: Store, clock: Any, path: str) -> None:
    concurrency, flow = CLAIM_PATHS[path]
    store.registry.publish_handlers([replace(handler("work", concurrency=concurrency), flow=flow)])
    _defer(store, flow, [{"customer_id": f"c{i}"} for i in range(4)])
    for _ in range(2):  # the second claim of an unlimited handler is one statement where the driver has it
        (job,), moment = _claimed_late(store, clock, lambda: _StalledCheckout(store))
        started = store.queries.get_job(job.id)
        assert started is not None and started.started_at is not None
        assert _aware(started.started_at) >= moment, "started_at is when the claim held its connection"
        if flow.rate_limit is not None:
            assert max(_stamps(store)) >= moment, "a rate row carries the claim's real time"
        _finish_all(store, [job])


def test_a_claim_that_waits_for_a_handlers_lock_reads_its_time_once_it_holds_it(store: Store, clock: Any) -> None:
    _, flow = CLAIM_PATHS["limit per key"]
    store.registry.publish_handlers([replace(handler("work", concurrency=5), flow=flow)])
    _defer(store, flow, [{"customer_id": "c"}])
    handlers = store.tables.handlers

    class HeldLock:
        """The handler's row locked by another transaction (SQLite: the write lock) for 0.3 s."""

        moment: datetime | None = None

        def __init__(self) -> None:
            self.conn = store.db.engine.connect()
            self.tx = self.conn.begin()
            self.conn.execute(select(handlers.c.name).where(handlers.c.name == "work").with_for_update()).all()

        def __call__(self, thread: threading.Thread, clock: Any) -> None:
            time.sleep(0.3)  # the claimer is waiting for the lock by now
            clock.advance(5)
            self.moment = clock()
            self.tx.commit()
            self.conn.close()

    (job,), moment = _claimed_late(store, clock, HeldLock)
    started = store.queries.get_job(job.id)
    assert started is not None and started.started_at is not None
    assert _aware(started.started_at) >= moment, "started_at is when the claim held the handler's lock"


# -- a limit per key with a rate per key, and with fair sharing ----------------------------------


def _most_in_a_window(times: list[datetime], per: float) -> int:
    return max((sum(1 for u in times if t <= u < t + timedelta(seconds=per)) for t in times), default=0)


def test_a_limit_per_key_holds_with_a_rate_per_key_and_the_global_limit(store: Store, clock: Any) -> None:
    flow = FlowControl(
        concurrency_by="customer_id",
        concurrency_per_key=2,
        rate_limit=RateLimit(3, per=10),
        rate_limit_by="customer_id",
    )
    store.registry.publish_handlers([replace(handler("work", concurrency=5), flow=flow)])
    _defer(store, flow, [{"customer_id": c} for c in "abc" for _ in range(8)])
    starts: dict[str, list[datetime]] = {c: [] for c in "abc"}
    running: list[Any] = []
    for _ in range(40):
        jobs = _claim(store, limit=50)
        for job in jobs:
            starts[job.args["customer_id"]].append(clock())
        running += jobs
        per_key = _running_per_key(store, "concurrency_key")
        assert max(per_key.values(), default=0) <= 2, per_key
        assert sum(per_key.values()) <= 5, "the global limit holds too"
        if running:
            _finish_all(store, [running.pop(0)])
        clock.advance(1)
    for customer, times in starts.items():
        assert _most_in_a_window(times, 10) <= 3, (customer, times)
        assert len(times) >= 6, "each key goes on at its rate"


def test_fair_sharing_goes_round_the_keys_within_a_limit_per_key(store: Store) -> None:
    flow = FlowControl(fair_by="customer", concurrency_by="customer", concurrency_per_key=2)
    store.registry.publish_handlers([replace(handler("work"), flow=flow)])
    for customer in ("A", "B", "C"):  # in bursts: all of A first, then B, then C
        _defer(store, flow, [{"customer": customer, "n": n} for n in range(40)])
    first = _claim(store, limit=50)
    assert sorted(j.args["customer"] for j in first) == ["A", "A", "B", "B", "C", "C"], "two per key"
    _finish_all(store, first)
    started: list[str] = []
    while len(started) < 90:
        jobs = sorted(_claim(store, limit=1), key=lambda j: j.id)
        assert jobs
        started += [j.args["customer"] for j in jobs]
        _finish_all(store, jobs)
    for i in range(len(started) - 30):
        window = started[i : i + 30]
        assert all(6 <= window.count(c) <= 14 for c in "ABC"), (i, window)
