"""Limits per key across worker processes: never above the limit per key, with the global one at once."""

from __future__ import annotations

import bisect
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobstead import App, JobStatus
from tests.conftest import Target
from tests.multiprocess.test_crash_and_limits import _peak
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.slow]


def _flow_app(target: Target) -> App:
    from tests.apps import flow

    app = App(target.url, schema=target.schema)
    h = flow.app.get_handler("per_customer")
    app.handler(
        name="per_customer",
        concurrency=h.concurrency,
        concurrency_by=h.flow.concurrency_by,
        concurrency_per_key=h.flow.concurrency_per_key,
    )(h.func)
    return app


def test_a_limit_per_key_holds_across_four_processes_with_the_global_limit(
    server_target: Target, tmp_path: Path
) -> None:
    app = _flow_app(server_target)
    customers = ["big"] * 60 + ["a", "b", "c"] * 10 + [None] * 10  # the big backlog first
    jobs = app.get_handler("per_customer").defer_many([{"customer_id": c, "i": i} for i, c in enumerate(customers)])
    store, table = app.store, app.store.tables.jobs
    samples: list[dict[str | None, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        """Running jobs per key as the database has them, as often as it answers."""
        query = (
            select(table.c.concurrency_key, func.count())
            .where(table.c.status == JobStatus.RUNNING.value)
            .group_by(table.c.concurrency_key)
        )
        while not stop_sampling.is_set():
            with store.db.engine.connect() as conn:
                samples.append({key: int(n) for key, n in conn.execute(query)})
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [
        spawn_cli(
            ["worker", "--app", "tests.apps.flow:app", "--concurrency", "8", "--poll-interval", "0.05"],
            server_target.env(),
            tmp_path / f"worker-{n}.log",
        )
        for n in range(4)
    ]
    try:
        results = [app.get_job(j.id).wait(120) for j in jobs]
    finally:
        codes = [stop(w) for w in workers]
        stop_sampling.set()
        sampler.join()
    assert codes == [0, 0, 0, 0]
    assert len(samples) > 50, "the database was sampled throughout"
    assert max(max(s.values(), default=0) for s in samples) <= 2, "a key ran more than 2 at once"
    assert max(sum(s.values()) for s in samples) <= 5, "the global limit"
    for customer in ("big", "a", "b", "c", None):
        spans = [(r["start"], r["end"]) for r in results if r["customer_id"] == customer]
        assert _peak(spans) <= 2, f"{customer}: {_peak(spans)} ran at once"
    assert _peak([(r["start"], r["end"]) for r in results]) <= 5
    assert _peak([(r["start"], r["end"]) for r in results if r["customer_id"] == "big"]) == 2, "reached, not only kept"
    assert len({r["pid"] for r in results}) > 1, "every process should have taken part"
    app.close()


def _most_in_a_window(starts: list[float], per: float) -> int:
    """The most starts in any window [s, s + per) (each window begins at a start: that is where maxima are)."""
    ordered = sorted(starts)
    return max((bisect.bisect_left(ordered, s + per) - i for i, s in enumerate(ordered)), default=0)


def test_rate_limits_hold_in_every_sliding_window_across_four_processes(server_target: Target, tmp_path: Path) -> None:
    from tests.apps import flow

    app = App(server_target.url, schema=server_target.schema)
    app.rate_limit("stripe", flow.app.rate_limits["stripe"])
    for name in ("rated", "charge", "refund", "per_customer_rate"):
        h = flow.app.get_handler(name)
        app.handler(
            name=name, rate_limit=h.flow.rate_limit, rate_limit_by=h.flow.rate_limit_by, rate_limits=h.flow.rate_limits
        )(h.func)
    app.get_handler("rated").defer_many([{"i": i} for i in range(150)])
    app.get_handler("per_customer_rate").defer_many([{"customer_id": c, "i": i} for i in range(20) for c in "xyz"])
    app.get_handler("charge").defer_many([{"i": i} for i in range(30)])
    app.get_handler("refund").defer_many([{"i": i} for i in range(30)])
    workers = [
        spawn_cli(
            ["worker", "--app", "tests.apps.flow:app", "--concurrency", "8", "--poll-interval", "1"],
            server_target.env(),
            tmp_path / f"worker-{n}.log",
        )
        for n in range(4)
    ]
    jobs = app.store.tables.jobs
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and app.stats().by_status.get("succeeded", 0) < 270:
            time.sleep(0.2)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0]
    with app.store.db.engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.handler, jobs.c.started_at, jobs.c.status, jobs.c.attempts, jobs.c.rate_key)
        ).all()
    assert all(r.status == JobStatus.SUCCEEDED.value and r.attempts == 1 for r in rows), "none lost, none run twice"
    starts = {
        name: [r.started_at.timestamp() for r in rows if r.handler == name] for name in ("rated", "charge", "refund")
    }
    assert _most_in_a_window(starts["rated"], 1.0) <= 25
    assert _most_in_a_window(starts["charge"] + starts["refund"], 1.0) <= 10, "the shared limit counts both"
    for customer in "xyz":
        mine = [r.started_at.timestamp() for r in rows if r.handler == "per_customer_rate" and r.rate_key == customer]
        assert len(mine) == 20 and _most_in_a_window(mine, 1.0) <= 5, customer
        assert max(mine) - min(mine) <= 3.0 / 0.8, f"{customer}: 20 starts at 5/s took {max(mine) - min(mine):.2f} s"
    # Close to the limit: after the first window's starts, 125 more at 25/s take 5 s, and
    # 50 more at 10/s take 5 s; at least 80% of the rate (these jobs do nothing).
    span = max(starts["rated"]) - min(starts["rated"])
    assert span <= 5.0 / 0.8, f"150 starts at 25/s took {span:.2f} s"
    shared = max(starts["charge"] + starts["refund"]) - min(starts["charge"] + starts["refund"])
    assert shared <= 5.0 / 0.8, f"60 starts at 10/s took {shared:.2f} s"
    app.close()


def test_sequences_start_in_id_order_one_at_a_time_across_four_processes(server_target: Target, tmp_path: Path) -> None:
    from tests.apps import flow

    app = App(server_target.url, schema=server_target.schema)
    h = flow.app.get_handler("in_order")
    app.handler(name="in_order", sequence_by="account_id")(h.func)
    calls = [{"account_id": f"acct-{k}", "n": n} for n in range(15) for k in range(10)]
    jobs = app.get_handler("in_order").defer_many(calls)
    workers = [
        spawn_cli(
            ["worker", "--app", "tests.apps.flow:app", "--concurrency", "8", "--poll-interval", "0.05"],
            server_target.env(),
            tmp_path / f"worker-{n}.log",
        )
        for n in range(4)
    ]
    try:
        results = {j.id: app.get_job(j.id).wait(120) for j in jobs}
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0]
    for k in range(10):
        mine = sorted(j.id for j, call in zip(jobs, calls, strict=True) if call["account_id"] == f"acct-{k}")
        spans = [(results[i]["start"], results[i]["end"]) for i in mine]
        for (_, end), (start, _) in pairwise(spans):
            assert end <= start, f"acct-{k}: a job started before the one deferred before it ended"
    assert len({r["pid"] for r in results.values()}) > 1, "every process should have taken part"
    app.close()


def test_fair_sharing_across_four_processes(server_target: Target, tmp_path: Path) -> None:
    from tests.apps import flow

    app = App(server_target.url, schema=server_target.schema)
    h = flow.app.get_handler("shared_fairly")
    app.handler(name="shared_fairly", fair_by="tenant")(h.func)
    for tenant in ("A", "B", "C"):  # in bursts: all of A, then B, then C
        h_ = app.get_handler("shared_fairly")
        h_.configure(tenant=tenant).defer_many([{"n": n} for n in range(60)])
    workers = [
        spawn_cli(
            ["worker", "--app", "tests.apps.flow:app", "--concurrency", "4", "--poll-interval", "0.05"],
            server_target.env(),
            tmp_path / f"worker-{n}.log",
        )
        for n in range(4)
    ]
    jobs = app.store.tables.jobs
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and app.stats().by_status.get("succeeded", 0) < 180:
            time.sleep(0.2)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0]
    with app.store.db.engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.tenant, jobs.c.started_at, jobs.c.id).order_by(jobs.c.started_at, jobs.c.id)
        ).all()
    order = [r.tenant for r in rows]
    # while all three have a backlog: until the first tenant's last start
    last = min(max(i for i, t in enumerate(order) if t == tenant) for tenant in "ABC")
    assert last > 120, f"the tenants' backlogs should last together, not one after another: {''.join(order)}"
    for i in range(last - 30):
        window = order[i : i + 30]
        assert all(6 <= window.count(t) <= 14 for t in "ABC"), (i, "".join(window))
    app.close()
