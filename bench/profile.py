"""``python -m bench.profile``: where Jobstead's worker and enqueue paths spend their time.

Three views of one drain of ``BENCH_JOBS`` (20,000) no-op jobs, the same
setup as ``make bench``'s 1-process drain:

* the worker process, sampled by ``py-spy record`` (all threads: the event
  loop, the claim/complete threads, the heartbeat), summarised as the functions
  with the most samples, self and inclusive;
* the SQL, from ``pg_stat_statements`` (loaded for this server only): total
  and mean time, rows and buffers per statement;
* the enqueue path in the harness process (``defer`` one by one, and one
  ``defer_many``), by pyinstrument.

Output: a summary on stdout, and under ``.cache/bench/profile/`` the raw
collapsed stacks, a speedscope file (open at https://www.speedscope.app) and
pyinstrument's text trees. Not part of ``make bench``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from pyinstrument import Profiler

from tests.support.postgres_server import PostgresServer

from .config import Settings
from .harness import REPO, Harness, libpq
from .probe import open_collector
from .systems.jobstead import Jobstead

OUT = REPO / ".cache" / "bench" / "profile"
PY_SPY = Path(sys.executable).parent / "py-spy"


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (path/file.py)``: lines of one function count together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})" if where else name


def summarise(collapsed: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f for f in stack.split(";")
        ]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    lines += ["", "self:"] + [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"] + [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def statements(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) as conn:
        rows = await (
            await conn.execute(
                """
                SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows,
                       shared_blks_hit + shared_blks_read, left(regexp_replace(query, '\\s+', ' ', 'g'), 160)
                FROM pg_stat_statements
                WHERE query NOT ILIKE '%pg_stat_statements%'
                ORDER BY total_exec_time DESC LIMIT 12
                """
            )
        ).fetchall()
    out = ["calls  total_ms  mean_ms  rows  buffers  query"]
    out += [f"{c:6} {t:9} {m:8} {r:6} {b:8}  {q}" for c, t, m, r, b, q in rows]
    return "\n".join(out)


async def main() -> None:
    settings = Settings.from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(durable=True).start()
    server._psql("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.restart()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    try:
        url = server.create_database("profile")
        system = Jobstead(url)
        await system.open()
        conn = await harness.admin(system)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

        # -- enqueue path, in this process -----------------------------------
        await harness.reset(system)
        profiler = Profiler(interval=0.0005)
        with profiler:
            for _ in range(settings.single):
                await system.defer_one()
        (OUT / "defer.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        await harness.reset(system)
        profiler = Profiler(interval=0.0005)
        with profiler:
            await system.defer_bulk(settings.jobs)
        (OUT / "defer_many.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))

        # -- worker path, one process under py-spy, twice -------------------
        # wall: every thread's non-idle samples (where the worker waits: the DB, threads)
        # gil:  only the thread holding the GIL (where Python itself burns the CPU)
        for view, extra in (("wall", []), ("gil", ["--gil"])):
            await harness.reset(system)
            await conn.execute("SELECT pg_stat_statements_reset()")
            workers = await harness.start_workers(system, 1, "profile")
            collapsed = OUT / f"worker-{view}.collapsed.txt"
            pid = str(workers.processes[0].pid)
            spy = subprocess.Popen(
                [str(PY_SPY), "record", "--pid", pid, "--rate", "250", "--format", "raw", *extra, "-o", str(collapsed)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            started = time.perf_counter()
            await system.defer_bulk(settings.jobs)
            remaining, _ = await harness._wait_drained(system, settings.jobs, time.time(), 300, workers)
            elapsed = time.perf_counter() - started
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 30)
            sql = await statements(url)
            await workers.stop()
            print(f"\n== worker process, {view} view (py-spy): {settings.jobs - remaining} jobs in {elapsed:.1f} s ==")
            print(summarise(collapsed))
            print(f"\n== SQL during the {view} drain (pg_stat_statements, includes the harness's polls) ==")
            print(sql)
        for name in ("defer.txt", "defer_many.txt"):
            print(f"\n== {name} (pyinstrument) ==")
            print((OUT / name).read_text()[:6000])
        await system.close()
    finally:
        await harness.close()
        transport.close()
        server.cleanup()
    print(f"\nfiles in {OUT}")


def _check_tools() -> Any:
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        raise SystemExit("py-spy missing: make bench creates .cache/bench-venv with it")
    if os.geteuid() != 0:
        print("note: py-spy needs ptrace permission (root, or kernel.yama.ptrace_scope=0)")


if __name__ == "__main__":
    _check_tools()
    asyncio.run(main())
