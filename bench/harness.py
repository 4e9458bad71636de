"""The measurements themselves, the same procedure for every system.

Timing rules (bench/README.md explains them at more length):

* Drains: workers start on an EMPTY queue and report ``ready`` after their first
  fetch; only then are the jobs deferred, in one bulk transaction, so no job is
  visible before every process is up. The clock starts when the first job starts
  (the earliest ``first`` report) and stops when the system's own tables say no
  deferred job is unfinished (polled, more often as the end nears). Start-up,
  connection set-up and the bulk insert are therefore all outside the figure.
* Enqueue figures are timed in the harness around the system's public API call.
* Latency: the handler reports ``start - defer`` for probe jobs deferred at a
  steady rate, each stamped with ``time.time()`` just before its ``defer`` call.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from .probe import Collector
from .systems import System

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = REPO / ".cache" / "bench" / "logs"
PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A measurement could not be made (a worker did not start, jobs went missing)."""


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def libpq(url: str) -> str:
    """The plain libpq form, without Jobstead's own URL options (libpq refuses unknown ones)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1).split("?prepare_threshold=", 1)[0]


@dataclass
class DrainResult:
    jobs: int
    done: int
    seconds: float
    capped: bool
    #: Seconds between the first and the last process starting its first job.
    start_spread: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds


class Workers:
    """Worker processes of one system, stopped gracefully (SIGTERM) at the end."""

    def __init__(
        self,
        system: System,
        count: int,
        probe: str,
        options: list[str],
        label: str,
        env: dict[str, str] | None = None,
    ) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen[bytes]] = []
        env = {**os.environ, "BENCH_PROBE": probe, "PYTHONUNBUFFERED": "1", **(env or {})}
        for i in range(count):
            with open(LOG_DIR / f"{label}-{i}.log", "wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.worker", system.name, "--url", system.url, *options],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent,
                    )
                )

    def check_alive(self) -> None:
        for p in self.processes:
            if p.poll() is not None:
                raise BenchError(f"worker process {p.pid} exited with {p.returncode}; see {LOG_DIR}")

    async def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                await asyncio.to_thread(p.wait)


class Harness:
    """Runs one measurement at a time against one system's database."""

    def __init__(self, collector: Collector, probe: str) -> None:
        self.collector = collector
        self.probe = probe
        self._admin: dict[str, psycopg.AsyncConnection[Any]] = {}

    async def admin(self, system: System) -> psycopg.AsyncConnection[Any]:
        """An autocommit connection to the system's database for counting, resetting and CHECKPOINT."""
        conn = self._admin.get(system.url)
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(libpq(system.url), autocommit=True)
            self._admin[system.url] = conn
        return conn

    async def close(self) -> None:
        for conn in self._admin.values():
            await conn.close()

    async def scalar(self, system: System, sql: str) -> int:
        conn = await self.admin(system)
        row = await (await conn.execute(sql)).fetchone()
        assert row is not None
        return int(row[0])

    async def reset(self, system: System) -> None:
        """Empty queue, and a checkpoint so no run pays for the previous run's dirty pages."""
        conn = await self.admin(system)
        await conn.execute(system.reset_sql)
        await conn.execute("CHECKPOINT")

    # -- enqueue -------------------------------------------------------------

    async def enqueue_single(self, system: System, n: int) -> float:
        await self.reset(system)
        started = time.perf_counter()
        for _ in range(n):
            await system.defer_one()
        return n / (time.perf_counter() - started)

    async def enqueue_bulk(self, system: System, n: int) -> float:
        await self.reset(system)
        started = time.perf_counter()
        await system.defer_bulk(n)
        elapsed = time.perf_counter() - started
        if (count := await self.scalar(system, system.remaining_sql)) != n:
            raise BenchError(f"{system.name}: bulk defer of {n} left {count} jobs")
        return n / elapsed

    # -- drain ---------------------------------------------------------------

    async def start_workers(self, system: System, count: int, label: str) -> Workers:
        self.collector.reset()
        workers = self.spawn(system, count, label)
        if not await self.collector.wait_for(lambda: len(self.collector.ready) >= count, 120):
            await workers.stop()
            raise BenchError(f"{system.name}: {len(self.collector.ready)} of {count} workers ready; see {LOG_DIR}")
        return workers

    def spawn(self, system: System, count: int, label: str, env: dict[str, str] | None = None) -> Workers:
        """Start ``count`` worker processes of ``system`` (not waiting for them)."""
        return Workers(system, count, self.probe, system.worker_options(), label, env)

    async def drain(
        self, system: System, *, processes: int, jobs: int, cap: float, label: str, reset: bool = True
    ) -> DrainResult:
        """Defer ``jobs`` at once to ``processes`` idle workers; time first start to last completion."""
        if reset:
            await self.reset(system)
        before = await self.scalar(system, system.succeeded_sql)
        workers = await self.start_workers(system, processes, label)
        try:
            await system.defer_bulk(jobs)
            if not await self.collector.wait_for(lambda: bool(self.collector.first), 60):
                workers.check_alive()
                raise BenchError(f"{system.name}: no job started within 60 s of the defer")
            t_first = min(self.collector.first.values())
            remaining, t_end = await self._wait_drained(system, jobs, t_first, cap, workers)
            # every process that took part has reported by now
            firsts = sorted(self.collector.first.values())
        finally:
            await workers.stop()
        if not remaining:
            finished = await self.scalar(system, system.succeeded_sql) - before
            if finished != jobs:
                raise BenchError(f"{system.name}: {finished} of {jobs} jobs succeeded")
        return DrainResult(
            jobs=jobs,
            done=jobs - remaining,
            seconds=t_end - t_first,
            capped=remaining > 0,
            start_spread=firsts[-1] - firsts[0],
        )

    async def _wait_drained(
        self, system: System, jobs: int, t_first: float, cap: float, workers: Workers
    ) -> tuple[int, float]:
        """Poll until no job is unfinished; return the unfinished count and the time of the poll that saw none.

        Counting unfinished jobs costs a few ms of database time per poll at
        20,000 jobs, so the count runs only every 250 ms, to estimate the time
        left; from half a second before the expected end, a cheap EXISTS polls
        every 5 ms, so the end is seen within a few ms while the polling itself
        costs the measured system next to nothing. At ``cap`` seconds the count
        decides how many jobs were done.
        """
        while True:
            now = time.time()
            remaining = await self.scalar(system, system.remaining_sql)
            if remaining == 0:
                return 0, now
            if now - t_first >= cap:
                return remaining, now
            workers.check_alive()
            rate = (jobs - remaining) / max(now - t_first, 0.25)
            left = remaining / rate if rate > 0 else cap
            if left > 0.5:
                await asyncio.sleep(min(0.25, left - 0.5))
                continue
            deadline = now + 2 * left + 1.0  # the estimate was wrong: count again
            while time.time() < deadline:
                sent = time.time()
                if not await self.scalar(system, system.unfinished_sql):
                    return 0, sent
                await asyncio.sleep(0.005)

    # -- latency -------------------------------------------------------------

    async def latency(self, system: System, *, rate: float, seconds: float, warmup: float, label: str) -> list[float]:
        """Defer probe jobs at ``rate``/s for ``seconds`` to one idle worker; return the delays (s)."""
        await self.reset(system)
        workers = await self.start_workers(system, 1, label)
        try:
            sent = await self._paced(system, rate, warmup)  # connections, caches, plans: discarded
            await self._collect(sent, 15, workers)
            self.collector.latencies.clear()
            sent = await self._paced(system, rate, seconds)
            await self._collect(sent, 15, workers)
            return list(self.collector.latencies)
        finally:
            await workers.stop()

    async def _paced(self, system: System, rate: float, seconds: float) -> int:
        """Defer one probe job every 1/rate s on a fixed schedule (late ones go at once, no catch-up burst)."""
        n = int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await system.defer_one(time.time())
        return n

    async def _collect(self, n: int, timeout: float, workers: Workers) -> None:
        if not await self.collector.wait_for(lambda: len(self.collector.latencies) >= n, timeout):
            workers.check_alive()
            raise BenchError(f"only {len(self.collector.latencies)} of {n} probe jobs started within {timeout} s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a delay some job really had)."""
    ordered = sorted(values)
    rank = min(max(math.ceil(q / 100 * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)
