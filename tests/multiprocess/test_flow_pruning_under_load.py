"""Pruning idle keys' rate rings while four worker processes claim through them: no rate is exceeded.

A ring whose starts are all a period old is idle: exactly when a claimer may
be taking its rows. The pruner deletes a row only while it is free, checked by
the DELETE itself, so a row a claimer stamps meanwhile stays; one deleted
under a claimer is made anew, free, as it was. Pruned in a tight loop for the
whole run, every key's starts still fit its rate in every sliding window.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from jobstead import App, JobStatus
from jobstead.store import Store
from tests.conftest import Target
from tests.multiprocess.test_flow_limits import _most_in_a_window
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.slow]

CUSTOMERS = "vwxyz"


def test_pruning_rings_in_a_loop_never_lets_a_rate_per_key_be_exceeded(server_target: Target, tmp_path: Path) -> None:
    from tests.apps import flow

    app = App(server_target.url, schema=server_target.schema)
    h = flow.app.get_handler("per_customer_rate")
    app.handler(name="per_customer_rate", rate_limit=h.flow.rate_limit, rate_limit_by=h.flow.rate_limit_by)(h.func)
    # The first customer has few jobs: its ring goes idle after a second, while the others still claim
    # (with equal backlogs every ring stays busy to the end on a loaded machine: nothing to prune).
    counts = {c: 5 if c == CUSTOMERS[0] else 15 for c in CUSTOMERS}
    app.get_handler("per_customer_rate").defer_many(
        [{"customer_id": c, "i": i} for i in range(15) for c in CUSTOMERS if i < counts[c]]
    )
    pruned = [0]
    done = threading.Event()

    def prune() -> None:
        pruner = Store.connect(server_target.url, schema=server_target.schema)  # a worker's retention turn
        try:
            while not done.is_set():
                pruned[0] += pruner.retention.prune_flow().rate_rows
                time.sleep(0.01)
        finally:
            pruner.close()

    pruner = threading.Thread(target=prune)
    pruner.start()
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
        while time.monotonic() < deadline and app.stats().by_status.get("succeeded", 0) < sum(counts.values()):
            time.sleep(0.2)
    finally:
        codes = [stop(w) for w in workers]
        done.set()
        pruner.join()
    assert codes == [0, 0, 0, 0]
    assert pruned[0] > 0, "the pruner found idle rings while the workers claimed"
    with app.store.db.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.started_at, jobs.c.status, jobs.c.attempts, jobs.c.rate_key)).all()
    assert all(r.status == JobStatus.SUCCEEDED.value and r.attempts == 1 for r in rows), "none lost, none run twice"
    for customer in CUSTOMERS:
        mine = [r.started_at.timestamp() for r in rows if r.rate_key == customer]
        assert len(mine) == counts[customer] and _most_in_a_window(mine, 1.0) <= 5, customer
    app.close()
