"""The steady-state workload: jobs deferred at a fixed rate while the workers run.

How users run a queue: a producer process defers ``io`` jobs (each waits 5-15 ms,
uniform: simulated I/O) at a fixed rate while 4 worker processes with 25 slots
each run them. The slots can take 100 / 10 ms = 10,000 jobs/s (``NOMINAL``);
the rates are 50%, 90% and 120% of the capacity measured in the same run (a
drain of queued ``io`` jobs by the same workers), so the loads mean the same on
a faster or a busier machine. For each rate, after a warm-up:

* achieved throughput: jobs started per second in the window;
* backlog over time: queued jobs, counted every 0.5 s (first, largest, last);
* defer-to-start p50/p95/p99 of the jobs started in the window;
* the share of worker slots busy (time-weighted, measured by each process).

``python -m bench.steady`` runs it alone (``BENCH_STEADY_RATES=5000,9000`` fixes
absolute rates instead, to compare two versions at the same load).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .harness import LOG_DIR, REPO, BenchError, Harness, Workers, _die_with_parent, percentile
from .systems.jobstead import JobsteadIO

NOMINAL = 10_000
LOADS = (0.5, 0.9, 1.2)
BACKLOG_SQL = "SELECT count(*) FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying')"


@dataclass
class SteadyResult:
    offered: float
    deferred_rate: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    busy: float
    backlog: list[tuple[float, int]] = field(default_factory=list)

    @property
    def backlog_summary(self) -> str:
        counts = [n for _, n in self.backlog]
        return f"{counts[0]:,} / {max(counts):,} / {counts[-1]:,}" if counts else "n/a"


async def capacity(harness: Harness, system: JobsteadIO, processes: int, jobs: int) -> float:
    """What the workers can take: a drain of ``jobs`` queued io jobs."""
    r = await harness.drain(system, processes=processes, jobs=jobs, cap=12, label="jobstead-io-drain")
    return r.rate


async def run_rate(
    harness: Harness, system: JobsteadIO, *, processes: int, rate: float, warmup: float, seconds: float
) -> SteadyResult:
    await harness.reset(system)
    workers: Workers = await harness.start_workers(system, processes, "jobstead-steady")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "jobstead-producer.log", "wb")  # noqa: SIM115 - closed below
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.producer",
            "--url",
            system.url,
            "--rate",
            str(rate),
            "--seconds",
            str(warmup + seconds),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        preexec_fn=_die_with_parent,
    )
    backlog: list[tuple[float, int]] = []
    try:
        started = time.time()
        window = (started + warmup, started + warmup + seconds)
        while producer.poll() is None:
            workers.check_alive()
            await asyncio.sleep(0.5)
            backlog.append((round(time.time() - started, 1), await harness.scalar(system, BACKLOG_SQL)))
        out, _ = await asyncio.to_thread(producer.communicate)
        if producer.returncode != 0:
            raise BenchError(f"the producer exited with {producer.returncode}; see {LOG_DIR}")
        report = json.loads(out.decode().strip().splitlines()[-1])
        await asyncio.sleep(0.3)  # the last quarter second's datagrams
    finally:
        if producer.poll() is None:
            producer.kill()
        log.close()
        await workers.stop()
    samples = [s for s in harness.collector.steady if window[0] <= s.at <= window[1]]
    delays = [d for s in samples for d in s.delays_ms]
    elapsed = sum(s.elapsed for s in samples)
    if not delays or not elapsed:
        raise BenchError(f"no job started in the steady-state window ({len(harness.collector.steady)} reports in all)")
    span = max(s.at for s in samples) - min(s.at for s in samples) + 0.25
    return SteadyResult(
        offered=rate,
        deferred_rate=report["deferred"] / report["seconds"],
        throughput=len(delays) / span,
        p50_ms=percentile(delays, 50),
        p95_ms=percentile(delays, 95),
        p99_ms=percentile(delays, 99),
        busy=sum(s.busy for s in samples) / (elapsed * system.knob_value),
        backlog=[(t, n) for t, n in backlog if t >= warmup],
    )


async def measure(
    harness: Harness, system: JobsteadIO, *, processes: int, warmup: float, seconds: float, say: Any = print
) -> dict[str, Any]:
    fixed = [float(r) for r in os.environ.get("BENCH_STEADY_RATES", "").split(",") if r]
    cap = await capacity(harness, system, processes, 20_000)
    say(f"  io drain (capacity): {cap:,.0f} jobs/s (the slots allow {NOMINAL:,})")
    rates = fixed or [round(load * cap) for load in LOADS]
    out: dict[str, Any] = {"capacity": cap, "levels": []}
    for rate in rates:
        r = await run_rate(harness, system, processes=processes, rate=rate, warmup=warmup, seconds=seconds)
        say(
            f"  offered {rate:,.0f}/s: {r.throughput:,.0f} jobs/s, p50/p95/p99 {r.p50_ms:.1f}/{r.p95_ms:.1f}/"
            f"{r.p99_ms:.1f} ms, slots busy {r.busy:.0%}, backlog first/max/last {r.backlog_summary}"
        )
        out["levels"].append(asdict(r))
    return out


async def main() -> None:
    from tests.support.postgres_server import PostgresServer

    from .probe import open_collector

    server = PostgresServer(durable=True).start()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    try:
        system = JobsteadIO(server.create_database("jobstead_io"))
        await system.open()
        for _ in range(int(os.environ.get("BENCH_REPS", "1"))):
            result = await measure(harness, system, processes=4, warmup=2, seconds=8)
            print(json.dumps(result))
        await system.close()
    finally:
        await harness.close()
        transport.close()
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
