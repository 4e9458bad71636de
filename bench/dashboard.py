"""``python -m bench.dashboard``: what the dashboard costs, on a table of a million jobs.

Two figures (issue 17):

1. Render time of every page with 1,000,000 jobs in the table (target: each
   under 200 ms). The rows are written straight into the table with one
   ``INSERT ... SELECT generate_series`` (the bench's business only): mostly
   succeeded over the last two days, plus dead, failed, queued, scheduled
   and retrying ones, then ``VACUUM ANALYZE`` as autovacuum would do. Each
   page is fetched in-process (routing, queries and templates; no network),
   the median of ``REPS`` after one warm-up.
2. Statements per second the dashboard runs with 5 tabs open on the
   overview while 1,000 jobs/s are deferred and run by a worker process.
   Each tab is a thread doing what the page's script does: follow the
   server-sent events and fetch the page on each ``change``. Statements are
   counted on the dashboard's own engine; the workload's transactions come
   from ``pg_stat_database``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jobstead import App

#: The worker process imports this module for its handler (``--app bench.dashboard:app``).
app = App()


@app.handler
def noop(i: int = 0) -> None:
    return None


JOBS = int(os.environ.get("BENCH_DASHBOARD_JOBS", "1000000"))
REPS = int(os.environ.get("BENCH_DASHBOARD_REPS", "5"))
TABS = 5
RATE = 1000
SECONDS = float(os.environ.get("BENCH_DASHBOARD_SECONDS", "20"))

FILL = """
INSERT INTO jobstead_jobs (handler, queue, priority, status, args, run_at, created_at, started_at,
                           finished_at, attempts, cancel_requested, result, error, key, tenant)
SELECT 'handler_' || (g %% 5), 'queue_' || (g %% 3), 0, s.status,
       jsonb_build_object('order', g, 'email', 'user' || g || '@example.com'),
       t, t, t, CASE WHEN s.status IN ('succeeded', 'dead', 'failed') THEN t + interval '5 ms' END,
       1, false, 'null'::jsonb,
       CASE WHEN s.status IN ('dead', 'failed', 'retrying') THEN jsonb_build_object(
           'type', 'builtins.' || (ARRAY['ValueError', 'TimeoutError', 'KeyError'])[1 + g %% 3],
           'message', 'order ' || g || ' failed', 'traceback', 'Traceback (most recent call last): ...') END,
       'key-' || g, CASE WHEN g %% 10 = 0 THEN 'tenant_' || (g %% 7) END
FROM (
    SELECT g,
           now() - interval '2 days' * (1 - g::float / %(n)s) AS t,
           CASE WHEN g %% 100 = 1 THEN 'dead' WHEN g %% 100 = 2 THEN 'failed'
                WHEN g %% 100 = 3 THEN 'queued' WHEN g %% 100 = 4 THEN 'retrying'
                WHEN g %% 200 = 5 THEN 'scheduled' ELSE 'succeeded' END AS status
    FROM generate_series(1, %(n)s) AS g
) AS s
"""


def fill(url: str, store: Any) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(FILL, {"n": JOBS})
        conn.execute("UPDATE jobstead_jobs SET run_at = now() + interval '1 hour' WHERE status = 'scheduled'")
        conn.execute("VACUUM ANALYZE jobstead_jobs")


def render_times(store: Any) -> list[tuple[str, float]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's note on its test client's HTTP library
        from starlette.testclient import TestClient

    from jobstead.dashboard import create_dashboard

    newest = store.queries.list_jobs()[0].id
    paths = [
        "/",
        "/jobs",
        "/jobs?status=dead",
        "/jobs?status=queued&handler=handler_3",
        "/jobs?handler=handler_2&queue=queue_1",
        "/jobs?tenant=tenant_3",
        "/jobs?before=500000",
        "/jobs?q=key-777777",
        f"/jobs/{newest}",
        "/running",
        "/failures",
        "/crons",
        "/workers",
        "/batches",
        "/activity",
    ]
    results = []
    dashboard = create_dashboard(store, auth=None)
    shared = dashboard.state.dashboard.shared_overview
    with TestClient(dashboard) as client:
        for path in paths:
            assert client.get(path).status_code == 200, path
            times = []
            for _ in range(REPS):
                shared.clear()  # the first tab's render, not a second tab served the same counts
                started = time.perf_counter()
                response = client.get(path)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200
            results.append((path, statistics.median(times) * 1000))
    return results


def open_tabs_cost(url: str, tmp: Path) -> dict[str, float]:
    import httpx
    import uvicorn
    from sqlalchemy import event

    from jobstead.dashboard import create_dashboard
    from jobstead.dashboard.serving import StreamClosingServer
    from jobstead.store import Store
    from tests.support.processes import spawn_cli, stop

    store = Store.connect(url)
    statements = [0]

    @event.listens_for(store.db.engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        statements[0] += 1

    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    dashboard = create_dashboard(store, auth=None)
    config = uvicorn.Config(dashboard, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    server = StreamClosingServer(config, dashboard)
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    serving.start()
    stop_tabs = threading.Event()
    refreshes = [0]

    def tab() -> None:
        with httpx.Client(base_url=base, timeout=None) as client, client.stream("GET", "/events") as events:
            for line in events.iter_lines():
                if stop_tabs.is_set():
                    return
                if line.startswith("event: change"):
                    client.get("/")
                    refreshes[0] += 1

    env = {"JOBSTEAD_DATABASE_URL": url}
    worker = spawn_cli(["worker", "--app", "bench.dashboard:app", "--concurrency", "50"], env, tmp / "worker.log")
    producer = app  # its URL comes from $JOBSTEAD_DATABASE_URL, set by main()
    tabs = [threading.Thread(target=tab, daemon=True) for _ in range(TABS)]
    for t in tabs:
        t.start()
    time.sleep(3)  # tabs connected, worker started

    def rows_written() -> int:
        import psycopg

        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            row = conn.execute(
                "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
            return int(row[0]) if row else 0

    before_statements, before_refreshes, before_rows = statements[0], refreshes[0], rows_written()
    started = time.monotonic()
    deferred = 0
    while time.monotonic() - started < SECONDS:
        tick = time.monotonic()
        noop.defer_many([{"i": i} for i in range(RATE // 10)])
        deferred += RATE // 10
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - started
    dashboard_statements = statements[0] - before_statements
    time.sleep(1)  # pg_stat_database is updated by each backend at most every 500 ms
    total_rows = rows_written() - before_rows
    figures = {
        "seconds": elapsed,
        "jobs_deferred_per_s": deferred / elapsed,
        "dashboard_statements_per_s": dashboard_statements / elapsed,
        "page_refreshes_per_s": (refreshes[0] - before_refreshes) / elapsed,
        "rows_written_per_s": total_rows / elapsed,
    }
    stop_tabs.set()
    stop(worker)
    server.should_exit = True
    serving.join(10)
    producer.close()
    store.close()
    return figures


def main() -> int:
    from jobstead.store import Store
    from tests.support.postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        url = server.create_database("dashboard_bench")
        os.environ["JOBSTEAD_DATABASE_URL"] = url
        store = Store.connect(url)
        store.migrate()
        started = time.monotonic()
        fill(url, store)
        print(f"{JOBS:,} jobs written in {time.monotonic() - started:.0f} s", flush=True)
        print(f"\nPage render time with {JOBS:,} jobs (median of {REPS}, in-process):")
        print("| Page | ms | under 200 ms |\n|---|--:|---|")
        for path, ms in render_times(store):
            print(f"| `{path}` | {ms:.1f} | {'yes' if ms < 200 else 'NO'} |", flush=True)
        store.close()
        with tempfile.TemporaryDirectory() as tmp:
            figures = open_tabs_cost(url, Path(tmp))
        print(f"\n{TABS} tabs on the overview while {figures['jobs_deferred_per_s']:.0f} jobs/s are deferred and run:")
        print("| Measure | per second |\n|---|--:|")
        print(f"| statements the dashboard ran | {figures['dashboard_statements_per_s']:.1f} |")
        print(f"| page refreshes (all tabs) | {figures['page_refreshes_per_s']:.1f} |")
        print(f"| rows the workload wrote (inserted, updated, deleted) | {figures['rows_written_per_s']:.0f} |")
        per_job = figures["dashboard_statements_per_s"] / max(figures["jobs_deferred_per_s"], 1)
        print(f"\nThe open dashboard ran {per_job:.3f} statements per job run; each refresh of the")
        print("overview is a handful of statements and tabs refresh at most once a second, so the")
        print("cost follows the number of tabs, not the job rate.")
        return 0
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
