"""A failover while a worker starts: its connection cut in the start-up's last write, the worker goes on.

A worker's start-up ends by giving back the jobs of workers that died
(``rescue_expired``), after the retried start-up steps. A primary that dies or
is shut down by a failover manager just then ended the worker (exit 2, "cannot
use the PostgreSQL database ...: terminating connection due to administrator
command"): found when a worker still starting met the kill of a failover. The
rescue is the rescuer's duty anyway, so a transient failure there is logged
and the worker starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Target
from tests.reliability.conftest import wait_for
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = pytest.mark.postgres


def test_a_worker_whose_connection_is_cut_in_its_start_up_rescue_starts_all_the_same(
    postgres_target: Target, tmp_path: Path
) -> None:
    env = postgres_target.env()
    migrated = run_cli(["migrate", "--app", "tests.apps.faults:app"], env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    conninfo = postgres_target.url.replace("+psycopg", "")
    log = tmp_path / "worker.log"
    with psycopg.connect(conninfo) as holder:
        # The jobs table locked: the start-up's rescue waits on it, and only it does.
        holder.execute(f"LOCK TABLE {postgres_target.schema}.jobstead_jobs IN ACCESS EXCLUSIVE MODE")
        worker = spawn_cli(["worker", "--app", "tests.apps.faults:app"], env, log)
        try:
            with psycopg.connect(conninfo, autocommit=True) as admin:
                waiting: list[tuple[int, str]] = []

                def blocked() -> bool:
                    waiting[:] = admin.execute(
                        "SELECT pid, query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchall()
                    return bool(waiting)

                wait_for(blocked, timeout=60, what="the worker's start-up to wait on the jobs table")
                assert len(waiting) == 1 and "lease_expires_at" in waiting[0][1], waiting
                # What a failover manager (or a dying primary) does to the connections.
                admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
            holder.rollback()
            wait_for(lambda: " started: " in log.read_text() or worker.poll() is not None, timeout=60, what="a start")
            time.sleep(1)
            assert worker.poll() is None, log.read_text()
            assert " started: " in log.read_text(), log.read_text()
        finally:
            stop(worker)
