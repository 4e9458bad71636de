"""The read-only trap: a primary that stops taking writes while every connection to it stays open.

The Aurora case (a writer turned reader under open connections) and its
cousin, an old primary that comes back, read-only, as the first host of the
URL. Workers (with a 30 s poll interval, so only LISTEN wakes them quickly),
a cron scheduler and a metrics process run on a multi-host URL; the primary
turns read-only (``default_transaction_read_only`` + a reload) and the
standby is promoted. Every process must be working on the new primary within
10 s, none may hang or exit, the workers' LISTEN must follow (a job deferred
on the new primary starts within seconds), and no cron fire may be deferred
twice.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from tests.apps.faults import SPANS_ENV, read_spans
from tests.reliability.conftest import wait_for
from tests.support.failover import SCHEMA, faults_app
from tests.support.postgres_server import free_port
from tests.support.processes import run_cli, spawn_cli, stop
from tests.support.standby import ReplicatedPair, replicated_pair

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MOVE_WITHIN = 10.0
T = TypeVar("T")


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair(synchronous=True) as started:
        yield started


def _turn_read_only(pair: ReplicatedPair) -> None:
    """The running primary stops taking writes under its open connections; then the standby is promoted."""
    pair.set(pair.primary, "default_transaction_read_only", "on")
    time.sleep(1.0)  # every process meets the read-only server first
    pair.promote()


def _back_read_only(pair: ReplicatedPair) -> None:
    """The primary dies, the standby is promoted, and the old primary comes back read-only, first in the URL."""
    pair.crash_primary()
    pair.promote()
    old = pair.standby
    old.settings.append("default_transaction_read_only=on")
    old.restart_stopped()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("trap", [_turn_read_only, _back_read_only], ids=["turned-read-only", "back-read-only"])
def test_every_process_moves_to_the_new_primary_within_10_s(pair: ReplicatedPair, tmp_path: Path, trap: object) -> None:
    database = f"r_{uuid.uuid4().hex[:10]}"
    pair.primary.create_database(database)
    url = pair.url(database)
    spans = tmp_path / "spans.log"
    env = {"JOBSTEAD_DATABASE_URL": url, "JOBSTEAD_SCHEMA": SCHEMA, SPANS_ENV: str(spans)}
    assert run_cli(["migrate", "--app", "tests.apps.faults:app"], env, timeout=120).returncode == 0
    metrics_port = free_port()
    argv = {
        "worker0": ["worker", "--app", "tests.apps.faults:app", "--poll-interval", "30", "--concurrency", "4"],
        "worker1": ["worker", "--app", "tests.apps.faults:app", "--poll-interval", "30", "--concurrency", "4"],
        "scheduler": ["scheduler", "--app", "tests.apps.faults:app", "--interval", "0.2"],
        "metrics": ["metrics", "--port", str(metrics_port)],
    }
    logs = {name: tmp_path / f"{name}.log" for name in argv}
    processes = {name: spawn_cli(args, env, logs[name]) for name, args in argv.items()}
    app = faults_app(url)
    try:
        before = app.get_handler("work").defer_many([{"ms": 10} for _ in range(8)])
        for job in before:
            job.wait(60)
        # Every process running before the trap.
        wait_for(lambda: "jobstead_database_up 1.0" in _scrape(metrics_port), 60, "the metrics process")
        wait_for(lambda: all("started" in logs[n].read_text() for n in ("worker0", "worker1")), 60, "the workers")
        trap(pair)  # type: ignore[operator]
        promoted_at = time.time()
        # A job deferred on the new primary right away: started within seconds only if a worker
        # claims there and its LISTEN connection was moved there (the poll interval is 30 s).
        if trap is _turn_read_only:
            # The test's own pooled connections are on the read-only server: the defer is refused
            # there, and made again on a fresh connection, to the new primary, without an error.
            after = app.get_handler("work").defer(ms=10)
        else:
            after = _retrying(lambda: app.get_handler("work").defer(ms=10))
        wait_for(lambda: any(s.job_id == after.id for s in read_spans(spans)), 30, "a job on the new primary")
        started_after = min(s.start for s in read_spans(spans) if s.job_id == after.id) - promoted_at
        wait_for(lambda: _cron_ran_since(spans, promoted_at), 30, "a cron fire run on the new primary")
        try:
            wait_for(lambda: "jobstead_database_up 1.0" in _scrape(metrics_port), 30, "metrics from the new primary")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {_scrape(metrics_port)[:300]!r}\n{logs['metrics'].read_text()[-3000:]}"
            ) from None
        metrics_back = time.time() - promoted_at
        # Each worker listens on the new primary 10 s after the promotion (polling is 30 s): a
        # burst of jobs deferred then is shared by both, within seconds.
        time.sleep(max(0.0, promoted_at + MOVE_WITHIN - time.time()))
        burst = _retrying(lambda: app.get_handler("work").defer_many([{"ms": 300} for _ in range(16)]))
        burst_at = time.time()
        for job in burst:
            job.wait(30)
        burst_pids = {s.pid for s in read_spans(spans) if s.job_id in {j.id for j in burst}}
        burst_took = time.time() - burst_at
        alive = {name: p.poll() is None for name, p in processes.items()}
    finally:
        for process in processes.values():
            stop(process)
        app.close()
    text = {name: log.read_text() for name, log in logs.items()}
    shown = "\n".join(f"--- {name}\n{t[-2000:]}" for name, t in text.items())
    print(
        f"\nfirst job on the new primary started {started_after:.1f} s after the promotion; "
        f"metrics {metrics_back:.1f} s"
    )
    assert alive == dict.fromkeys(processes, True), shown
    assert started_after < MOVE_WITHIN, shown
    assert metrics_back < MOVE_WITHIN + 5, shown  # + one scrape interval
    assert burst_took < MOVE_WITHIN, shown
    assert len(burst_pids) == 2, shown  # both workers claim on the new primary
    for name in ("worker0", "worker1"):
        if trap is _turn_read_only:  # after a crash the first error may be a plain cut connection
            assert "stopped taking writes" in text[name], text[name][-3000:]
        assert "another worker owns it now" not in text[name]
    assert _cron_duplicates(pair, database) == [], shown


def _retrying(call: Callable[[], T]) -> T:
    """A defer as an app would retry it: the first may meet a pooled connection to the old primary."""
    for _ in range(50):
        try:
            return call()
        except Exception:
            time.sleep(0.2)
    return call()


def _cron_ran_since(spans: Path, since: float) -> bool:
    for line in spans.read_text().splitlines() if spans.exists() else []:
        parts = line.split()
        if parts[0] == "cron" and float(parts[4]) > since:
            return True
    return False


def _cron_duplicates(pair: ReplicatedPair, database: str) -> list[tuple[str, int]]:
    with psycopg.connect(pair.url(database).replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT metadata->>'cron_fire_at', count(*) FROM {SCHEMA}.jobstead_jobs "
            "WHERE metadata ? 'cron_fire_at' GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
    return [(str(fire), int(count)) for fire, count in rows]


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""
