"""``python -m bench.cpu``: CPU time per job, in the worker and in PostgreSQL, for Jobstead and pgqueuer.

Throughput alone does not say where a job's cost lies. This drains jobs with
one worker process per system and reads, from ``/proc``, the CPU time (user +
system) the worker process and the PostgreSQL server (the postmaster and every
backend it forked) spent meanwhile. Two drain sizes, so that what the worker
spends starting up (imports, connecting) drops out of the difference:
``(cpu(large) - cpu(small)) / (large - small)`` is the cost of one more job.

Not part of ``make bench``; ``bench/analysis.md`` quotes it. Sizes:
``BENCH_CPU_SMALL`` and ``BENCH_CPU_LARGE`` (60,000 and 180,000 jobs).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.support.postgres_server import PostgresServer

from .harness import REPO, libpq
from .systems import System
from .systems.jobstead import Jobstead
from .systems.pgqueuer import PgQueuer

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_cpu_seconds(postmaster: int) -> float:
    """The postmaster's CPU time plus that of its live children (backends, WAL writer, ...).

    Backends live as long as their connections, which outlast each drain here,
    so none is missed by not counting reaped children.
    """
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


async def drain_cpu(system: System, jobs: int, postmaster: int) -> tuple[float, float, float]:
    """Defer ``jobs``, drain them with one worker; (seconds, worker CPU s, server CPU s)."""
    await system.defer_bulk(jobs)
    async with await psycopg.AsyncConnection.connect(libpq(system.url), autocommit=True) as conn:
        await conn.execute("CHECKPOINT")
        server_before = server_cpu_seconds(postmaster)
        started = time.monotonic()
        env = {**os.environ, "BENCH_PROBE": "127.0.0.1:9", "PYTHONUNBUFFERED": "1"}  # reports go nowhere
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", system.name, "--url", system.url, *system.worker_options()],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while (await (await conn.execute(system.unfinished_sql)).fetchone() or (False,))[0]:
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            worker_cpu = cpu_seconds(worker.pid)
            server_cpu = server_cpu_seconds(postmaster) - server_before
        finally:
            worker.terminate()
            worker.wait(30)
        await conn.execute(system.reset_sql)
    return elapsed, worker_cpu, server_cpu


async def main() -> None:
    small = int(os.environ.get("BENCH_CPU_SMALL", 60_000))
    large = int(os.environ.get("BENCH_CPU_LARGE", 180_000))
    server = PostgresServer(durable=True).start()
    assert server.process is not None
    try:
        for cls in (Jobstead, PgQueuer):
            system = cls(server.create_database(cls.name))
            await system.open()
            runs = {n: await drain_cpu(system, n, server.process.pid) for n in (small, large)}
            (_, w_small, s_small), (_, w_large, s_large) = runs[small], runs[large]
            extra = large - small
            worker_us = (w_large - w_small) / extra * 1e6
            server_us = (s_large - s_small) / extra * 1e6
            print(
                f"{system.name:10} {system.knob} {system.knob_value}: worker {worker_us:5.1f} us/job, "
                f"PostgreSQL {server_us:5.1f} us/job, together {worker_us + server_us:5.1f} us/job "
                f"(drains of {small:,} and {large:,} jobs, one worker process)",
                flush=True,
            )
            await system.close()
    finally:
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
