"""Scale with the work (issue 19): a deep queue, many handlers over many queues, a long history.

Three measurements, each a drain by 4 worker processes:

* **deep**: 1,000,000 ready no-op jobs already queued when the workers start,
  drained to the end (Jobstead, and pgqueuer beside it). The figures are the
  throughput over the whole drain and in its first, middle and last tenth; the
  issue's target is that those three stay within 20% of each other.
* **spread**: 100,000 jobs spread evenly over 1,000 handlers in 100 queues, every
  process serving all of them (a worker started without a queue list: all
  queues), against 100,000 jobs of one handler in one queue, alternating.
* **history**: 20,000 jobs drained with 10,000,000 finished jobs in the table
  (retention off) against the same drain with 10,000, alternating; the finished
  rows are written with SQL in the shape a worker leaves them (``bench.history``).

The deep and spread drains are *preloaded*: the queue is filled with the
system's own bulk API first (``defer_bulk``, chunks of 50,000 jobs, one
transaction each; so every row is exactly what a user's ``defer_many`` writes),
then ``VACUUM ANALYZE`` and ``CHECKPOINT``, as a production table would long have
been autovacuumed. The workers are started while the harness holds an
``EXCLUSIVE`` lock on the queue table (reads pass, every claim waits); once every
process is waiting on it in its claim (``pg_stat_activity``: a ``FOR UPDATE SKIP
LOCKED`` statement waiting on a lock), the lock is released, and the clock starts
at the first job's start, as in every drain of the bench. So all processes begin
together on a full queue, and start-up is outside the figures.

Progress comes from the workers, not from counting rows while the drain runs
(a ``count(*)`` over a million-row queue costs a tenth of a second of a core,
more at the start than at the end, which would bend the very curve being
measured). ``bench.worker`` wraps each system's own completion write (Jobstead:
``Leases.complete``; pgqueuer: ``Queries.log_jobs``, which moves finished jobs to
its log table) and reports, after each write returns (committed), how many
finished jobs that process has recorded (``done`` datagrams, ``bench.probe``);
the handlers also report every 100th start (``prog``). Throughput is jobs
*finished* (durably recorded), as in every drain of the bench: a stretch's rate
is the jobs recorded in it over the time between its two report points; the
start stretch begins at the first job's start, the end stretch ends at the last
commit. Starts are kept beside it: how far they ran ahead of the recorded
completions (``peak_unrecorded``) and whether any job ran twice. The database is
read only at the end, to confirm that no job is left unfinished.

``python -m bench.scale [deep] [spread] [history]`` runs them alone (all three by
default); ``make bench`` runs the spread drain always and the other two with
``BENCH_SCALE=1``.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg

from . import history, machine
from .config import Settings
from .harness import LOG_DIR, BenchError, Harness, libpq
from .probe import PROGRESS_ENV
from .systems import System
from .systems.jobstead import Jobstead, spread_name
from .systems.pgqueuer import PgQueuer

#: The queue table of each system the preloaded drains run (locked while workers start).
QUEUE_TABLES = {"jobstead": "jobstead_jobs", "pgqueuer": "pgqueuer"}
#: Jobs per bulk defer while filling a queue (each its own transaction).
CHUNK = 50_000
#: Jobs between two ``prog`` reports of a worker process.
EVERY = 100
#: The stretches of a drain reported as start, middle and end: (first, last) share of its jobs.
STRETCHES = {"start": (0.0, 0.1), "middle": (0.45, 0.55), "end": (0.9, 1.0)}
#: The issue's flatness target: the slowest stretch within this share of the fastest.
FLAT = 0.20
#: The blocked claims the harness waits for before opening the queue.
WAITING_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%skip locked%'
"""

Say = Callable[[str], None]


@dataclass
class PreloadedResult:
    """One preloaded drain; times are seconds from the first job's start (as every drain in the bench)."""

    jobs: int
    #: Seconds from the first job's start to the commit of the last finished job.
    seconds: float
    #: Jobs finished (durably recorded) per second in each stretch (``STRETCHES``) and each tenth.
    stretches: dict[str, float]
    tenths: list[float]
    #: Seconds from opening the queue to the first start of the first and of the last process.
    first_start: tuple[float, float]
    #: Seconds from starting the worker processes until every one waited in its first claim.
    startup_seconds: float
    #: Seconds the fill took (the system's bulk defer, in chunks), and VACUUM ANALYZE + CHECKPOINT.
    fill_seconds: float
    vacuum_seconds: float
    #: Other work's share of the machine's CPU during the drain (``machine.CpuMeter``).
    others_cpu: float
    #: Seconds from the first start to the last start: how long the handlers took to run them all.
    starts_seconds: float = 0.0
    #: The most jobs started but not yet recorded as finished at one time (slots, buffers, unwritten).
    peak_unrecorded: int = 0
    #: Job starts beyond one per job (jobs run twice after a lost lease; 0 when all is well).
    reruns: int = 0
    #: Worker log lines that tell of trouble, by kind, over all processes (``LOG_PROBLEMS``).
    worker_log: dict[str, int] = field(default_factory=dict)
    #: (seconds, jobs finished), a few hundred points of the curve the figures come from.
    curve: list[tuple[float, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def spread(self) -> float:
        """1 - slowest/fastest of the start, middle and end stretches (0: perfectly flat)."""
        rates = list(self.stretches.values())
        return 1 - min(rates) / max(rates)


def total_curve(reports: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    """All processes together after each report: [(time, total)], in time order.

    Each report (``prog`` or ``done``) carries its process's cumulative count,
    so a lost datagram only coarsens the curve.
    """
    latest: dict[int, int] = {}
    total = 0
    curve: list[tuple[float, int]] = []
    for t, pid, count in sorted(reports):
        if count > latest.get(pid, 0):
            total += count - latest.get(pid, 0)
            latest[pid] = count
            curve.append((t, total))
    return curve


def crossing(curve: list[tuple[float, int]], jobs: float) -> tuple[float, int]:
    """The first point of ``curve`` at or past ``jobs``."""
    i = bisect.bisect_left([n for _, n in curve], jobs)
    return curve[min(i, len(curve) - 1)]


def stretch_rate(curve: list[tuple[float, int]], first: float, jobs: int, lo: float, hi: float) -> float:
    """Jobs finished per second between the ``lo`` and ``hi`` shares of the drain.

    The ends are real report points (the first one at or past each share), so
    the rate is a count of jobs over the time they took; share 0 is the first
    job's start, share 1 the commit of the last finished job.
    """
    t0, n0 = (first, 0) if lo == 0 else crossing(curve, lo * jobs)
    t1, n1 = curve[-1] if hi >= 1 else crossing(curve, hi * jobs)
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def peak_gap(started: list[tuple[float, int]], done: list[tuple[float, int]]) -> int:
    """The largest number of jobs started and not yet recorded finished, at any start report."""
    times = [t for t, _ in done]
    gap = 0
    for t, n in started:
        i = bisect.bisect_right(times, t)
        gap = max(gap, n - (done[i - 1][1] if i else 0))
    return gap


async def fill_queue(harness: Harness, system: System, jobs: int) -> float:
    """An empty queue, then ``jobs`` no-op jobs deferred in chunks; returns the seconds it took."""
    await harness.reset(system)
    started = time.perf_counter()
    left = jobs
    while left:
        n = min(CHUNK, left)
        await system.defer_bulk(n)
        left -= n
    return time.perf_counter() - started


async def fill_spread(harness: Harness, system: Jobstead, jobs: int) -> float:
    """An empty queue, then ``jobs`` spread evenly over the spread app's handlers (one ``defer_many`` each)."""
    assert system.spread is not None
    handlers, queues = system.spread
    await harness.reset(system)
    started = time.perf_counter()
    for i in range(handlers):
        n = jobs // handlers + (1 if i < jobs % handlers else 0)
        if n:
            name, _ = spread_name(i, queues)
            await asyncio.to_thread(system.app.get_handler(name).defer_many, [{"t": 0.0}] * n)
    return time.perf_counter() - started


async def preloaded_drain(
    harness: Harness, system: System, *, processes: int, jobs: int, fill_seconds: float, label: str
) -> PreloadedResult:
    """Drain a queue filled beforehand: vacuum, hold the queue shut while the workers start, open it, time it."""
    table = QUEUE_TABLES[system.name]
    admin = await harness.admin(system)
    vacuum_started = time.perf_counter()
    await admin.execute(f"VACUUM ANALYZE {table}")
    await admin.execute("CHECKPOINT")
    vacuum_seconds = time.perf_counter() - vacuum_started
    before = await harness.scalar(system, system.succeeded_sql)
    queued = await harness.scalar(system, system.remaining_sql)
    if queued != jobs:
        raise BenchError(f"{system.name}: {queued} jobs queued, {jobs} expected")
    harness.collector.reset()
    meter = machine.CpuMeter()
    hold = await psycopg.AsyncConnection.connect(libpq(system.url))
    try:
        await hold.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        spawned = time.perf_counter()
        workers = harness.spawn(system, processes, label, env={PROGRESS_ENV: str(EVERY)})
        try:
            await _wait_blocked(harness, system, processes, workers)
            startup = time.perf_counter() - spawned
            await hold.commit()  # the queue opens: every process's claim proceeds
            opened = time.time()
            await _wait_done(harness, system, jobs, workers)
        finally:
            await workers.stop()
    finally:
        await hold.close()
    others = meter.overall()
    await asyncio.sleep(0.3)  # the exit reports
    done = await harness.scalar(system, system.succeeded_sql) - before
    if done != jobs:
        raise BenchError(f"{system.name}: {done} of {jobs} jobs succeeded")
    started = total_curve(harness.collector.progress)
    curve = total_curve(harness.collector.done)
    starts = started[-1][1] if started else 0
    if starts < jobs or not curve or curve[-1][1] < jobs:
        raise BenchError(
            f"{system.name}: the workers reported {starts} starts and {curve[-1][1] if curve else 0} "
            f"finished jobs of {jobs} (lost datagrams?)"
        )
    firsts = sorted(harness.collector.first.values())
    t0 = firsts[0]
    # More starts than jobs: some ran twice (a lease lost, the job rescued); its second
    # completion is the one recorded, so the finished curve still counts each job once.
    return PreloadedResult(
        jobs=jobs,
        seconds=curve[-1][0] - t0,
        stretches={name: stretch_rate(curve, t0, jobs, lo, hi) for name, (lo, hi) in STRETCHES.items()},
        tenths=[stretch_rate(curve, t0, jobs, i / 10, (i + 1) / 10) for i in range(10)],
        first_start=(firsts[0] - opened, firsts[-1] - opened),
        startup_seconds=startup,
        fill_seconds=fill_seconds,
        vacuum_seconds=vacuum_seconds,
        others_cpu=round(others, 3),
        starts_seconds=started[-1][0] - t0,
        peak_unrecorded=peak_gap(started, curve),
        reruns=starts - jobs,
        worker_log=_log_lines(label, processes),
        curve=[(round(t - t0, 3), n) for t, n in curve[:: max(1, len(curve) // 400)]],
    )


async def _wait_blocked(harness: Harness, system: System, processes: int, workers: Any) -> None:
    deadline = time.monotonic() + 120
    while await harness.scalar(system, WAITING_SQL) < processes:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{system.name}: the workers' claims did not reach the locked queue; see {LOG_DIR}")
        await asyncio.sleep(0.05)


async def _wait_done(harness: Harness, system: System, jobs: int, workers: Any) -> None:
    """Wait, on the workers' reports only, until every job is recorded finished; then confirm in the database."""
    deadline = time.monotonic() + max(300, jobs / 500)
    done = 0
    while done < jobs:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{system.name}: {done} of {jobs} jobs finished by the deadline")
        await asyncio.sleep(0.1)
        curve = total_curve(harness.collector.done)
        done = curve[-1][1] if curve else 0
    while await harness.scalar(system, system.unfinished_sql):
        workers.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{system.name}: jobs left unfinished at the deadline")
        await asyncio.sleep(0.05)


#: What a worker log line tells, by a phrase in it (Jobstead's messages; other systems log none of them).
LOG_PROBLEMS = {
    "renewal_failed": "lease renewal failed",
    "result_dropped": "lease lost before completion was written",
    "rescued": "whose worker stopped renewing its lease",
}


def _log_lines(label: str, processes: int) -> dict[str, int]:
    """How many lines of each ``LOG_PROBLEMS`` kind the drain's worker logs hold."""
    counts = dict.fromkeys(LOG_PROBLEMS, 0)
    for i in range(processes):
        path = LOG_DIR / f"{label}-{i}.log"
        if not path.exists():
            continue
        with open(path, errors="replace") as log:
            for line in log:
                for kind, phrase in LOG_PROBLEMS.items():
                    if phrase in line:
                        counts[kind] += 1
    return {kind: n for kind, n in counts.items() if n}


def _summary(r: PreloadedResult) -> str:
    s = r.stretches
    trouble = f"; {r.reruns:,} jobs ran twice, worker logs: {r.worker_log}" if r.reruns or r.worker_log else ""
    return (
        f"{r.rate:,.0f} jobs/s overall ({r.seconds:.1f} s; all started by {r.starts_seconds:.1f} s, "
        f"up to {r.peak_unrecorded:,} started and not yet recorded); start {s['start']:,.0f}, "
        f"middle {s['middle']:,.0f}, end {s['end']:,.0f} (spread {r.spread:.0%}); "
        f"fill {r.fill_seconds:.1f} s, vacuum+checkpoint {r.vacuum_seconds:.1f} s, "
        f"workers up in {r.startup_seconds:.1f} s, other work {r.others_cpu:.0%}{trouble}"
    )


Record = Callable[[str, str, float], None]


async def deep(
    harness: Harness,
    systems: list[System],
    settings: Settings,
    say: Say,
    record: Record,
    runs: dict[str, Any],
) -> None:
    """The deep queue: each system in turn per repetition, one fresh fill per drain."""
    for rep in range(settings.scale_reps):
        for system in systems:
            say(f"scale: deep queue of {settings.deep_jobs:,}, {system.name}, run {rep + 1}/{settings.scale_reps}")
            fill = await fill_queue(harness, system, settings.deep_jobs)
            r = await preloaded_drain(
                harness,
                system,
                processes=settings.processes,
                jobs=settings.deep_jobs,
                fill_seconds=fill,
                label=f"{system.name}-deep",
            )
            record("deep", system.name, r.rate)
            for name, rate in r.stretches.items():
                record(f"deep_{name}", system.name, rate)
            runs.setdefault("deep", {}).setdefault(system.name, []).append(asdict(r))
            say(f"  {_summary(r)}")
            await harness.reset(system)  # a million finished rows: not the next system's problem


async def spread(
    harness: Harness,
    server_db: Callable[[str], str],
    settings: Settings,
    say: Say,
    record: Record,
    runs: dict[str, Any],
) -> None:
    """Many handlers over many queues against one handler, the same number of jobs, alternating."""
    many = Jobstead(server_db("jobstead_spread"), spread=(settings.spread_handlers, settings.spread_queues))
    one = Jobstead(server_db("jobstead_spread_one"))
    for s in (many, one):
        await s.open()
    n = settings.spread_jobs
    try:
        for rep in range(settings.reps):
            for metric, system in (("spread_many", many), ("spread_one", one)):
                what = (
                    f"{settings.spread_handlers:,} handlers in {settings.spread_queues} queues"
                    if system is many
                    else "one handler"
                )
                say(f"scale: drain {n:,} preloaded jobs of {what}, run {rep + 1}/{settings.reps}")
                fill = await (fill_spread(harness, many, n) if system is many else fill_queue(harness, one, n))
                r = await preloaded_drain(
                    harness, system, processes=settings.processes, jobs=n, fill_seconds=fill, label=f"jobstead-{metric}"
                )
                record(metric, "jobstead", r.rate)
                runs.setdefault(metric, {}).setdefault("jobstead", []).append(asdict(r))
                say(f"  {_summary(r)}")
    finally:
        for s in (many, one):
            await s.close()


async def long_history(
    harness: Harness,
    server_db: Callable[[str], str],
    settings: Settings,
    say: Say,
    record: Record,
    runs: dict[str, Any],
) -> None:
    """A drain with 10,000,000 finished jobs in the table against one with 10,000, alternating.

    As ``bench.run``'s 1,000,000-row comparison: the same drain (``Harness.drain``,
    jobs deferred to running workers), each run's jobs deleted again afterwards.
    """
    tables: list[tuple[str, int, Jobstead, int]] = []
    for metric, finished in (("history_base", settings.history_small), ("history_huge", settings.history_huge)):
        system = Jobstead(server_db(f"jobstead_{metric}"))
        await system.open()
        say(f"scale: writing {finished:,} finished jobs")
        started = time.perf_counter()
        watermark = await history.fill(harness, system, finished)
        say(f"  {time.perf_counter() - started:.0f} s (INSERT ... SELECT, VACUUM ANALYZE, CHECKPOINT)")
        tables.append((metric, finished, system, watermark))
    try:
        for rep in range(settings.reps):
            for metric, finished, system, watermark in tables:
                say(f"scale: drain {settings.jobs:,} with {finished:,} finished jobs, run {rep + 1}/{settings.reps}")
                if rep:
                    await history.back_to(harness, system, watermark)
                r = await harness.drain(
                    system,
                    processes=settings.processes,
                    jobs=settings.jobs,
                    cap=settings.drain_cap,
                    label=f"jobstead-{metric}",
                    reset=False,
                )
                record(metric, "jobstead", r.rate)
                runs.setdefault(metric, {}).setdefault("jobstead", []).append(asdict(r))
                say(f"  {r.rate:,.0f} jobs/s")
    finally:
        for _, _, system, _ in tables:
            await system.close()


PARTS = ("deep", "spread", "history")


async def measure(
    harness: Harness,
    server_db: Callable[[str], str],
    settings: Settings,
    parts: tuple[str, ...],
    say: Say,
    record: Record,
    runs: dict[str, Any],
) -> None:
    """The parts asked for, in the order of ``PARTS``."""
    if "spread" in parts:
        await spread(harness, server_db, settings, say, record, runs)
    if "deep" in parts:
        kinds: dict[str, type[System]] = {"jobstead": Jobstead, "pgqueuer": PgQueuer}
        systems: list[System] = [kinds[name](server_db(f"{name}_deep")) for name in settings.systems if name in kinds]
        for s in systems:
            await s.open()
        try:
            await deep(harness, systems, settings, say, record, runs)
        finally:
            for s in systems:
                await s.close()
    if "history" in parts:
        await long_history(harness, server_db, settings, say, record, runs)


async def main(argv: list[str]) -> int:
    """``python -m bench.scale [deep] [spread] [history]``: these rows alone, written to ``results/scale.md``.

    ``python -m bench.scale --merge A.json B.json ...``: pieces run one after another as one report.
    """
    from tests.support.postgres_server import PostgresServer

    from . import report
    from .probe import open_collector
    from .run import Progress

    if argv[:1] == ["--merge"]:
        merged = report.merge_scale([json.loads(Path(a).read_text()) for a in argv[1:]])
        print(f"written {report.write_scale(merged, 'scale-merged')}\n")
        print(report.render_scale(merged))
        return 0
    parts = tuple(p for p in PARTS if p in argv) or PARTS
    unknown = sorted(set(argv) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    settings = Settings.from_env()
    say = Progress()
    say(f"settings: {settings}; parts: {', '.join(parts)}")
    server = PostgresServer(durable=True).start()
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    figures: dict[str, dict[str, list[float]]] = {}
    runs: dict[str, Any] = {}

    def record(metric: str, system: str, value: float) -> None:
        figures.setdefault(metric, {}).setdefault(system, []).append(value)

    try:
        facts = await machine.describe(server.url())
        facts["load_start"] = machine.load()
        await measure(harness, server.create_database, settings, parts, say, record, runs)
        facts["load_end"] = machine.load()
        facts["others_cpu"] = round(say.cpu.overall(), 3)
        facts["others_cpu_peak"] = round(say.cpu.peak, 3)
        facts["minutes"] = round((time.monotonic() - say.started) / 60, 1)
        versions = {p: version(p) for p in ("pgqueuer",) if "deep" in parts and p in settings.systems}
        results = {
            "machine": facts,
            "versions": versions,
            "settings": asdict(settings),
            "parts": list(parts),
            "figures": figures,
            "runs": runs,
        }
        path = report.write_scale(results)
        say(f"raw results in {path}")
        print()
        print(report.render_scale(results))
        return 0
    finally:
        await harness.close()
        transport.close()
        server.cleanup()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except KeyboardInterrupt:
        sys.exit(130)
